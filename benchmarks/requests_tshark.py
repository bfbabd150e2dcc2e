"""What reading decrypted requests costs: slicing the chosen connections and tshark on the slice, against
tshark decrypting the whole capture, and against analyze without a key log.

Records on loopback (root, tcpdump; traffic only between 127.0.0.1 and 127.0.0.2/127.0.0.3): the lab's
Go peers with one NSS key log, a kubelet-shaped TLS 1.3 server (the chosen connections: HTTP/2 log
requests and HTTP/1.1 exec upgrades, each on its own connection) beside an apiserver-shaped TLS 1.3
server taking bulk uploads (the bulk path, also in the key log: tshark given the whole file decrypts
it too). Then, in interleaved rounds: commpath's requests step (slice + tshark), tshark on the whole
capture with the key log and a display filter on the kubelet port, and ``commpath.open`` with and
without the key log. Prints wall and CPU seconds (own + children) and the ratios.

    python benchmarks/requests_tshark.py --bulk-mb 60 --bulk-conns 2000 --kubelet-conns 40 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def record(d: Path, bulk_mb: int, kubelet_conns: int, bulk_conns: int) -> dict:
    """The loopback capture, its key log and inventory."""
    from commpath.lab._gobuild import peer_binary
    from test_requests import _self_signed, _wait_for_line
    peer = str(peer_binary())
    crt, key = _self_signed(d, "node1")
    keylog, pcap = d / "keylog.txt", d / "lo.pcap"
    kport, aport = _free_port("127.0.0.2"), _free_port("127.0.0.3")
    inv = d / "inventory.yaml"
    inv.write_text("apiVersion: commpath/v1\nkind: Inventory\n"
                   f"apiserver: {{endpoints: ['127.0.0.3:{aport}']}}\n"
                   "control_plane: [{name: cp1, addresses: ['127.0.0.1', '127.0.0.3']}]\n"
                   f"nodes: [{{name: node1, addresses: ['127.0.0.2']}}]\nkubelet_port: {kport}\n")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(pcap),
                             f"tcp and (port {kport} or port {aport})"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    servers = []
    try:
        _wait_for_line(dump, dump.stderr, "listening on", 60)
        for role, host, port in (("kubelet", "127.0.0.2", kport), ("apiserver", "127.0.0.3", aport)):
            s = subprocess.Popen([peer, "serve", "--role", role, "--listen", f"{host}:{port}", "--cert", str(crt),
                                  "--key", str(key), "--tls-min", "1.3", "--alpn", "h2,http/1.1",
                                  "--keylog", str(keylog), "--duration", "600s"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            servers.append(s)
            _wait_for_line(s, s.stdout, "ready", 60)
        common = [peer, "client", "--insecure", "--tls-min", "1.3", "--keylog", str(keylog), "--interval", "0s"]
        body = "x" * max(1024, min(100_000, bulk_mb * 1024 * 1024 // max(bulk_conns, 1)))
        subprocess.run([*common, "--count", str(bulk_conns), "--new-conn", "--method", "POST", "--body", body,
                        f"https://127.0.0.3:{aport}/version"], check=True, capture_output=True, timeout=1800)
        half = max(1, kubelet_conns // 2)
        subprocess.run([*common, "--count", "3", "--new-conn",
                        *[f"https://127.0.0.2:{kport}/containerLogs/default/pod{i}/app?tailLines=20" for i in range(half)]],
                       check=True, capture_output=True, timeout=600)
        subprocess.run([*common, "--count", "1", "--method", "POST", "--upgrade", "SPDY/3.1", "--new-conn",
                        *[f"https://127.0.0.2:{kport}/exec/default/pod{i}/app?command=ls" for i in range(kubelet_conns - half)]],
                       check=True, capture_output=True, timeout=600)
        with socket.socket() as s:      # a marker connection: once its SYN is in the file, all before it is
            s.bind(("127.0.0.1", 0))
            marker = struct.pack(">HH", s.getsockname()[1], kport)
            s.connect(("127.0.0.2", kport))
        deadline = time.monotonic() + 120
        while marker not in pcap.read_bytes()[-65536:] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
            s.wait(timeout=30)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=60)
    return {"pcap": pcap, "keylog": keylog, "inventory": inv, "kubelet_port": kport}


def measure(run: dict, rounds: int) -> dict:
    import commpath
    from commpath._requests import decode_hints
    from commpath.classify.requests import decrypted_connections
    from commpath.decode.requests import decrypt_requests
    base = commpath.open(run["pcap"], inventory=run["inventory"])
    conns = decrypted_connections(base.flows)
    cols = ["flow_id", "capture", "first_frame", "last_frame", "src_ip", "src_port", "dst_ip", "dst_port"]
    hints = decode_hints(conns, base.tls)
    size_mb = run["pcap"].stat().st_size / 1e6
    out: dict[str, list] = {"requests_step": [], "slice": [], "tshark_slice": [], "tshark_whole": [],
                            "open_without_keylog": [], "open_with_keylog": []}
    rows = None
    from commpath.decode import requests as decode_requests
    for _ in range(rounds):
        decode_requests._READS.clear()          # every round reads anew (the memo serves repeated judgements)
        c0, t0 = _cpu(), time.perf_counter()
        rr = decrypt_requests(conns[cols], run["keylog"], decode_as=hints)
        out["requests_step"].append((time.perf_counter() - t0, _cpu() - c0))
        out["slice"].append((rr.slice_seconds, None))
        out["tshark_slice"].append((rr.tshark_seconds, None))
        rows = rr
        c0, t0 = _cpu(), time.perf_counter()
        res = subprocess.run(["tshark", "-n", "-r", str(run["pcap"]), "-o", f"tls.keylog_file:{run['keylog']}",
                              "-Y", f"tcp.port == {run['kubelet_port']} && (http.request || http2.type == 1)",
                              "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=True)
        out["tshark_whole"].append((time.perf_counter() - t0, _cpu() - c0))
        whole_rows = len([x for x in res.stdout.split("\n") if x])
        for label, kl in (("open_without_keylog", None), ("open_with_keylog", run["keylog"])):
            decode_requests._READS.clear()
            c0, t0 = _cpu(), time.perf_counter()
            commpath.open(run["pcap"], inventory=run["inventory"], keylog=kl)
            out[label].append((time.perf_counter() - t0, _cpu() - c0))
    med = {k: sorted(w for w, _ in v)[len(v) // 2] for k, v in out.items()}
    cpu = {k: sorted(c for _, c in v)[len(v) // 2] for k, v in out.items() if v[0][1] is not None}
    return {
        "capture_mb": round(size_mb, 1), "capture_packets": int(base.captures["packets"].sum()),
        "flows": len(base.flows), "chosen_connections": rows.connections, "requests": len(rows.requests),
        "tshark_whole_rows": whole_rows, "slice_packets": rows.slice_packets,
        "slice_mb": round(rows.slice_bytes / 1e6, 3),
        "median_wall_s": {k: round(v, 3) for k, v in med.items()},
        "median_cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "tshark_ms_per_connection": round(1000 * med["tshark_slice"] / max(rows.connections, 1), 1),
        "tshark_s_per_slice_mb": round(med["tshark_slice"] / max(rows.slice_bytes / 1e6, 1e-9), 2),
        "slice_s_per_capture_mb": round(med["slice"] / size_mb, 4),
        "tshark_whole_s_per_capture_mb": round(med["tshark_whole"] / size_mb, 4),
        "whole_over_step_wall": round(med["tshark_whole"] / med["requests_step"], 2),
        "keylog_overhead_of_open_wall": round(med["open_with_keylog"] / med["open_without_keylog"], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bulk-mb", type=int, default=60, help="MB of bulk uploads to the apiserver-shaped server")
    ap.add_argument("--bulk-conns", type=int, default=2000, help="connections carrying the bulk uploads")
    ap.add_argument("--kubelet-conns", type=int, default=40, help="connections to the kubelet-shaped server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="record into DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if not all(shutil.which(t) for t in ("tshark", "tcpdump", "go")):
        print("needs tshark, tcpdump and Go", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="commpath-bench-requests-") as tmp:
        d = Path(args.keep) if args.keep else Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        run = record(d, args.bulk_mb, args.kubelet_conns, args.bulk_conns)
        print(json.dumps(measure(run, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
