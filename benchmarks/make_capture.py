"""Record a large benchmark capture of real TLS/HTTP/SSH/UDP traffic between two network namespaces.

Two namespaces (unique prefix ``cpb-<random>``) joined by a veth pair (GSO/GRO limited to the MTU,
so the capture holds wire-sized packets), a server side running Python ``ssl`` servers (TLS 1.3
and TLS 1.2, each with and without a required client certificate), plain HTTP, a UDP echo and a
real ``sshd`` (generated host key, key-only root login with a temporary authorized_keys), and a
client side running a bounded workload in rounds (short HTTPS/HTTP requests, chunked "watch"
streams of small events, bulk downloads and uploads, SSH commands and transfers, UDP exchanges,
a reused TCP 5-tuple). ``tcpdump -w`` records on the server's veth until the packet count
(``--packets``) or the file size (``--target-mb``) is reached, or ``--max-seconds`` passes.
Everything is torn down afterwards, also on failure.

``--repeat K`` (off by default) concatenates K copies of the recorded file with timestamps shifted
past the previous copy (``editcap -t`` + ``mergecap -a``); the copies reuse the same 5-tuples and
TCP sequence numbers, so use it only for size/speed tests, never for correctness.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_V4, CLIENT_V4 = "10.231.0.1", "10.231.0.2"
SERVER_V6, CLIENT_V6 = "fd31:231::1", "fd31:231::2"


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def make_pki(out: Path) -> None:
    """A CA, a server certificate (SAN = the server addresses) and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "commpath-bench"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("bench-ca")).issuer_name(name("bench-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = {
        "server": (rsa.generate_private_key(public_exponent=65537, key_size=2048), ExtendedKeyUsageOID.SERVER_AUTH,
                   [x509.DNSName("bench-server"), x509.IPAddress(ipaddress.ip_address(SERVER_V4)),
                    x509.IPAddress(ipaddress.ip_address(SERVER_V6))]),
        "client": (ec.generate_private_key(ec.SECP256R1()), ExtendedKeyUsageOID.CLIENT_AUTH,
                   [x509.DNSName("bench-client")]),
    }
    for role, (key, eku, sans) in leaves.items():
        cert = (x509.CertificateBuilder().subject_name(name(f"bench-{role}")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (out / f"{role}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, out / f"{role}.key")


class NamespacePair:
    """Server and client namespaces joined by a veth pair; ``close()`` removes both (idempotent)."""

    def __init__(self, prefix: str):
        self.server, self.client = f"{prefix}-srv", f"{prefix}-cli"
        self.created: list[str] = []

    def open(self) -> "NamespacePair":
        for ns in (self.server, self.client):
            _run("ip", "netns", "add", ns)
            self.created.append(ns)
        _run("ip", "link", "add", "veth0", "netns", self.server, "gso_max_size", "1500", "gro_max_size", "1500",
             "type", "veth", "peer", "name", "veth0", "netns", self.client, "gso_max_size", "1500", "gro_max_size", "1500")
        for ns, v4, v6 in ((self.server, SERVER_V4, SERVER_V6), (self.client, CLIENT_V4, CLIENT_V6)):
            _run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "veth0")
            _run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "veth0", "nodad")
            _run("ip", "-n", ns, "link", "set", "veth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def close(self) -> None:
        while self.created:
            ns = self.created.pop()
            for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run("ip", "netns", "del", ns, check=False)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_sshd(ns: str, tmp: Path) -> subprocess.Popen:
    host_key, user_key = tmp / "ssh_host_ed25519_key", tmp / "id_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key))
    (tmp / "authorized_keys").write_text((tmp / "id_ed25519.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    config = tmp / "sshd_config"
    config.write_text(
        f"Port 2222\nListenAddress {SERVER_V4}\nHostKey {host_key}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "MaxStartups 100:30:200\nMaxSessions 50\nUseDNS no\nPrintMotd no\n")
    return subprocess.Popen(["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "sshd.log", "w"))


def _wait_for(path: Path, seconds: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: process exited early ({p.args})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {seconds}s")
        time.sleep(0.1)


def _capinfos(path: Path) -> dict:
    out = _run("capinfos", "-M", "-c", "-s", "-u", "-E", "-T", "-r", str(path)).stdout.strip().split("\t")
    return {"packets": int(out[2]), "file_bytes": int(out[3]), "duration_s": float(out[4]) if len(out) > 4 else None,
            "link_type": out[1]}


def record(args) -> dict:
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"cpb-{secrets.token_hex(3)}"
    py = sys.executable
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{prefix}-")))
        os.chmod(tmp, 0o755)
        pairs = NamespacePair(prefix)
        stack.callback(pairs.close)
        pairs.open()
        (tmp / "pki").mkdir()
        make_pki(tmp / "pki")
        cfg = {
            "pki": str(tmp / "pki"), "ready_file": str(tmp / "ready"), "stop_file": str(tmp / "stop"),
            "status_file": str(tmp / "status.json"), "ssh_key": str(tmp / "id_ed25519"),
            "server_v4": SERVER_V4, "server_v6": SERVER_V6, "client_v4": CLIENT_V4,
            "workers": args.workers, "max_rounds": args.max_rounds, "max_seconds": args.max_seconds,
            "short_tls": 24, "short_http": 12, "watches": args.watches, "watch_events": args.watch_events,
            "bulk": args.bulk, "bulk_mb": args.bulk_mb, "ssh": 3, "ssh_mb": args.ssh_mb, "udp": 8,
        }
        (tmp / "config.json").write_text(json.dumps(cfg))

        server = subprocess.Popen(["ip", "netns", "exec", pairs.server, py, str(HERE / "_traffic.py"), "serve",
                                   "--config", str(tmp / "config.json")], stderr=open(tmp / "server.log", "w"))
        stack.callback(_stop, server)
        sshd = start_sshd(pairs.server, tmp)
        stack.callback(_stop, sshd)
        _wait_for(tmp / "ready", 30, "servers", [server])
        _wait_for(tmp / "sshd.pid", 30, "sshd", [sshd])

        pcap_tmp = tmp / "capture.pcap"
        tcpdump_cmd = ["ip", "netns", "exec", pairs.server, "tcpdump", "-i", "veth0", "-n", "-s", "262144",
                       "-B", str(args.buffer_kib), "-Z", "root", "-w", str(pcap_tmp)]
        if args.packets:
            tcpdump_cmd += ["-c", str(args.packets)]
        tcpdump = subprocess.Popen(tcpdump_cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "tcpdump.log", "w"))
        stack.callback(_stop, tcpdump, signal.SIGINT)
        _wait_for(pcap_tmp, 10, "tcpdump", [tcpdump])
        time.sleep(1.0)

        client = subprocess.Popen(["ip", "netns", "exec", pairs.client, py, str(HERE / "_traffic.py"), "client",
                                   "--config", str(tmp / "config.json")], stderr=open(tmp / "client.log", "w"))
        stack.callback(_stop, client)
        started = time.monotonic()
        target_bytes = args.target_mb * 1e6 if args.target_mb else None
        while client.poll() is None and time.monotonic() - started < args.max_seconds + 60:
            size = pcap_tmp.stat().st_size
            if tcpdump.poll() is not None or (target_bytes and size >= target_bytes):
                break
            if not args.quiet:
                status = (tmp / "status.json").read_text() if (tmp / "status.json").exists() else "{}"
                print(f"\r{time.monotonic() - started:6.0f}s {size / 1e6:8.1f} MB {status}", end="", file=sys.stderr)
            time.sleep(1.0)
        Path(cfg["stop_file"]).write_text("stop\n")
        try:
            client.wait(timeout=360)
        except subprocess.TimeoutExpired:
            _stop(client)
        time.sleep(1.0)
        _stop(tcpdump, signal.SIGINT)
        if not args.quiet:
            print(file=sys.stderr)
        tcpdump_log = (tmp / "tcpdump.log").read_text()
        status = json.loads((tmp / "status.json").read_text()) if (tmp / "status.json").exists() else {}
        shutil.move(str(pcap_tmp), out)
        drops = [line for line in tcpdump_log.splitlines() if "dropped" in line]
        return {"namespaces": [pairs.server, pairs.client], "workload": status, "tcpdump": drops,
                "elapsed_s": round(time.monotonic() - started, 1)}


def repeat(path: Path, copies: int) -> None:
    """Concatenate ``copies`` copies of ``path`` with timestamps shifted past the previous copy."""
    info = _capinfos(path)
    shift = (info["duration_s"] or 1.0) + 1.0
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        parts = [str(path)]
        for k in range(1, copies):
            part = Path(tmp) / f"part{k}.pcap"
            _run("editcap", "-t", f"{shift * k:.6f}", str(path), str(part))
            parts.append(str(part))
        merged = Path(tmp) / "merged.pcap"
        _run("mergecap", "-a", "-F", "pcap", "-w", str(merged), *parts)
        shutil.move(str(merged), path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "data" / "bench.pcap"), help="output pcap (default: %(default)s)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="stop after this many packets (0: no limit)")
    ap.add_argument("--target-mb", type=float, default=0, help="stop once the file reaches this size (0: no limit)")
    ap.add_argument("--max-seconds", type=float, default=900, help="upper bound of the recording time")
    ap.add_argument("--max-rounds", type=int, default=100_000, help="upper bound of workload rounds")
    ap.add_argument("--workers", type=int, default=12, help="parallel client tasks")
    ap.add_argument("--bulk", type=int, default=4, help="bulk transfers per round")
    ap.add_argument("--bulk-mb", type=float, default=1.0, help="size of each bulk transfer")
    ap.add_argument("--ssh-mb", type=float, default=0.5, help="size of each SSH transfer")
    ap.add_argument("--watches", type=int, default=10, help="watch streams per round")
    ap.add_argument("--watch-events", type=int, default=300, help="events per watch stream")
    ap.add_argument("--buffer-kib", type=int, default=262144, help="tcpdump -B buffer")
    ap.add_argument("--repeat", type=int, default=1, help="concatenate copies (time-shifted) of the recording")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("make_capture: needs root (network namespaces, tcpdump)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # unwind: namespaces and processes removed
    meta = record(args)
    out = Path(args.out).resolve()
    if args.repeat > 1:
        repeat(out, args.repeat)
        meta["repeat"] = args.repeat
    meta.update(_capinfos(out))
    meta["command"] = " ".join([Path(sys.executable).name, "benchmarks/make_capture.py", *(argv or sys.argv[1:])])
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
