"""Decrypted requests: a real Go kubelet-shaped TLS 1.3 server and client on loopback writing a key log,
captured by tcpdump, read by commpath and compared with tshark's own fields; the recorded lab runs;
hostile key logs and captures."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.classify.requests import label_requests, load_request_kinds, request_kinds
from commpath.cli import main as cli_main
from commpath.decode.requests import REQUEST_COLUMNS, redact_target, sanitize_keylog
from commpath.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
SECRET_TOKEN = "s3cr3t-bearer-value"
SECRET_QUERY = "hunter2-query-value"

needs_tools = pytest.mark.skipif(not (shutil.which("tshark") and shutil.which("tcpdump") and shutil.which("go")),
                                 reason="needs tshark, tcpdump and Go")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.2"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def _wait_for_line(proc: subprocess.Popen, stream, needle: str, timeout: float) -> str:
    """Read ``stream`` until a line holds ``needle`` (an event, not a sleep); the lines read so far."""
    seen: list[str] = []
    found = threading.Event()

    def reader():
        for line in iter(stream.readline, ""):
            seen.append(line)
            if needle in line:
                found.set()
                return
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if not found.wait(timeout):
        proc.kill()
        raise AssertionError(f"{needle!r} not seen within {timeout} s: {''.join(seen)[-500:]}")
    return "".join(seen)


def _mark_and_wait(pcap: Path, port: int, timeout: float = 60) -> None:
    """Open one more connection from a known port and wait until tcpdump has written its SYN: the
    packets before it are then in the file too (written in order, unbuffered)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        marker = struct.pack(">HH", s.getsockname()[1], port)
        s.connect(("127.0.0.2", port))
    deadline = time.monotonic() + timeout
    while marker not in pcap.read_bytes():
        if time.monotonic() > deadline:
            raise AssertionError(f"tcpdump did not write the marker connection within {timeout} s")
        time.sleep(0.05)     # polling for an event (the marker in the file), bounded by the deadline


#: what the clients ask the kubelet-shaped server, by kind: (url path, client options)
H2_PATHS = {"containerLogs": f"/containerLogs/kube-system/etcd-cp1/etcd?tailLines=5&token={SECRET_QUERY}",
            "pods": "/pods", "metrics": "/metrics/cadvisor", "stats": "/stats/summary", "healthz": "/healthz"}
UPGRADE_PATHS = {"exec": "/exec/default/web/app?command=cat&command=/etc/secret&output=1",
                 "attach": "/attach/default/web/app?output=1", "portForward": "/portForward/default/web?port=8080"}


@pytest.fixture(scope="module")
def kubelet_run(tmp_path_factory):
    """Loopback: apiserver-shaped clients on 127.0.0.1 → a kubelet-shaped Go server on 127.0.0.2, TLS 1.3
    with HTTP/2 (ALPN h2) and HTTP/1.1 upgrades, every key in one NSS key log; tcpdump records it."""
    if not (shutil.which("tshark") and shutil.which("tcpdump") and shutil.which("go")):
        pytest.skip("needs tshark, tcpdump and Go")
    from commpath.lab._gobuild import peer_binary
    peer = str(peer_binary())
    d = tmp_path_factory.mktemp("kubelet")
    crt, key = _self_signed(d, "node1")
    keylog, pcap = d / "keylog.txt", d / "lo.pcap"
    port = _free_port("127.0.0.2")
    inv = d / "inventory.yaml"
    inv.write_text("apiVersion: commpath/v1\nkind: Inventory\napiserver: {endpoints: ['127.0.0.1:6443']}\n"
                   "control_plane: [{name: cp1, addresses: ['127.0.0.1']}]\n"
                   f"nodes: [{{name: node1, addresses: ['127.0.0.2']}}]\nkubelet_port: {port}\n")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-c", "5000", "-w", str(pcap),
                             f"tcp and host 127.0.0.2 and port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = subprocess.Popen([peer, "serve", "--role", "kubelet", "--listen", f"127.0.0.2:{port}", "--cert", str(crt),
                               "--key", str(key), "--tls-min", "1.3", "--alpn", "h2,http/1.1", "--keylog", str(keylog),
                               "--duration", "120s"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_line(dump, dump.stderr, "listening on", 60)
        _wait_for_line(server, server.stdout, "ready", 60)
        base = f"https://127.0.0.2:{port}"
        common = [peer, "client", "--insecure", "--tls-min", "1.3", "--keylog", str(keylog), "--interval", "1ms"]
        subprocess.run([*common, "--count", "2", "--token", SECRET_TOKEN, *(base + p for p in H2_PATHS.values())],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([*common, "--count", "1", "--method", "POST", "--upgrade", "SPDY/3.1", "--new-conn",
                        *(base + p for p in UPGRADE_PATHS.values())], check=True, capture_output=True, timeout=60)
        subprocess.run([*common, "--count", "1", "--h2=false", base + "/pods"], check=True, capture_output=True,
                       timeout=60)
        _mark_and_wait(pcap, port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
    return {"pcap": pcap, "keylog": keylog, "inventory": inv, "port": port, "dir": d}


def _tshark_requests(pcap: Path, keylog: Path) -> set[tuple[int, str, str]]:
    """(frame, method, path) of every request as tshark itself reads the whole capture."""
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-o", "http.desegment_body:FALSE",
                          "-Y", "http.request || http2.headers.method", "-T", "fields", "-E", "aggregator=\x1f",
                          "-e", "frame.number", "-e", "http2.headers.method", "-e", "http2.headers.path",
                          "-e", "http.request.method", "-e", "http.request.uri"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = set()
    for line in out.split("\n"):
        if not line:
            continue
        frame, h2m, h2p, h1m, h1u = line.split("\t")
        for methods, paths in ((h2m, h2p), (h1m, h1u)):
            for m, p in zip(methods.split("\x1f") if methods else [], paths.split("\x1f") if paths else []):
                rows.add((int(frame), m, redact_target(p)))
    return rows


@needs_tools
def test_loopback_requests_match_tshark_and_are_labelled(kubelet_run):
    a = commpath.open(kubelet_run["pcap"], inventory=kubelet_run["inventory"], keylog=kubelet_run["keylog"])
    r = a.requests
    assert list(r.columns) == list(REQUEST_COLUMNS)
    assert len(r) > 0
    # the differential: every request tshark reads in the whole capture, and no other, at the same frame
    ours = {(int(f), m, p) for f, m, p in zip(r["frame"], r["method"], r["path"])}
    assert ours == _tshark_requests(kubelet_run["pcap"], kubelet_run["keylog"])
    # each row is on an apiserver-to-kubelet connection, inside that connection's frames
    flows = a.flows.set_index("flow_id")
    assert set(r["flow_path"].astype(str)) == {"apiserver-to-kubelet"}
    for fid, frame in zip(r["flow_id"], r["frame"]):
        assert flows.at[fid, "first_frame"] <= frame <= flows.at[fid, "last_frame"]
    # labels follow the URL (a request lost on a loaded machine is missing, never mislabelled)
    sent = {**H2_PATHS, **UPGRADE_PATHS}
    for kind, path in zip(r["request_kind"].astype(str), r["path"]):
        assert kind in sent and path.split("?")[0] == sent[kind].split("?")[0]
    assert set(r["request_kind"].astype(str)) <= set(sent)
    by_kind = r.groupby(r["request_kind"].astype(str))
    if "containerLogs" in by_kind.groups:
        logs = by_kind.get_group("containerLogs")
        assert set(logs["version"]) == {"HTTP/2"} and logs["stream_id"].notna().all()
        assert set(logs["target"]) == {"kube-system/etcd-cp1/etcd"}
        assert set(logs["auth"]) == {"bearer"}
    for kind in ("exec", "attach", "portForward"):
        if kind in by_kind.groups:
            g = by_kind.get_group(kind)
            assert set(g["version"]) == {"HTTP/1.1"} and set(g["upgrade"]) == {"SPDY/3.1"}
            assert g["stream_id"].isna().all()
            assert set(g["status"].dropna()) <= {101}
    assert r["encrypted"].all()
    # responses pair with their requests: a later frame of the same connection
    answered = r[r["status"].notna()]
    assert len(answered) > 0 and (answered["response_frame"] > answered["frame"]).all()


@needs_tools
def test_secrets_never_reach_the_table_or_the_output(kubelet_run, tmp_path):
    out = tmp_path / "out"
    code = cli_main(["analyze", str(kubelet_run["pcap"]), "--inventory", str(kubelet_run["inventory"]),
                     "--keylog", str(kubelet_run["keylog"]), "--out", str(out), "-q"])
    assert code in (0, 1, 3)
    written = pd.read_parquet(out / "requests.parquet")
    assert len(written) > 0
    text = written.to_csv()
    for secret in (SECRET_TOKEN, SECRET_QUERY, "/etc/secret"):
        assert secret not in text
    assert "token=REDACTED" in text or "containerLogs" not in text
    # read back: the same table with its declared dtypes
    again = commpath.open(out).requests
    assert list(again.columns) == list(REQUEST_COLUMNS)
    assert again["frame"].tolist() == written["frame"].tolist()


def test_recorded_lab_run_labels_every_kubelet_and_proxy_request():
    """captures/default (the emulated lab, Go peers writing a key log): what its ground truth sent."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    run = CAPTURES / "default"
    a = commpath.open(run, inventory=run / "inventory.yaml", keylog=run / "keylog.txt")
    r = a.requests
    kubelet = r[r["flow_path"].astype(str) == "apiserver-to-kubelet"]
    assert set(kubelet["request_kind"].astype(str)) == {"containerLogs", "exec", "portForward"}
    assert kubelet["encrypted"].all()
    proxy = r[r["flow_path"].astype(str) == "apiserver-proxy"]
    assert set(proxy["request_kind"].astype(str)) == {"proxy-node", "proxy-pod"}
    # the documented default: the proxy's requests in clear beside the https: ones
    assert set(proxy["encrypted"]) == {True, False}
    f = a.flows.set_index("flow_id")
    ends = f["dst_ip"].astype(str) + ":" + f["dst_port"].astype(str)
    assert (proxy["target"].astype(str) == proxy["flow_id"].map(ends)).all()
    assert not any("command=ls" in p for p in r["path"])


def test_real_cluster_without_keylog_stays_undecrypted_and_says_what_would_settle_it():
    """Real Kubernetes writes no key log: nothing encrypted is read; the proxy's clear-text requests are."""
    from commpath.check.decrypted import decrypted_path_entries
    run = CAPTURES / "real-default"
    if not run.exists():
        pytest.skip("no real-cluster recording")
    a = commpath.open(run, inventory=run / "inventory.yaml")
    r = a.requests
    assert list(r.columns) == list(REQUEST_COLUMNS)
    assert not r["encrypted"].any() and set(r["flow_path"].astype(str)) <= {"apiserver-proxy", "kubelet-readonly"}
    kubelet = decrypted_path_entries(r, "apiserver-to-kubelet")
    assert len(kubelet) == 1 and kubelet[0]["said"].startswith("not decrypted")
    assert "KeyLogWriter" in kubelet[0]["said"] and kubelet[0]["where"] == "no key log given (--keylog)"
    proxy = [e["said"] for e in decrypted_path_entries(r, "apiserver-proxy")]
    assert any("plain HTTP" in s for s in proxy) == bool(len(r))


def test_keylog_with_garbage_lines_one_line_rest_kept(tmp_path, capsys):
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    run = CAPTURES / "default"
    keylog = tmp_path / "keylog.txt"
    good = (run / "keylog.txt").read_text().splitlines()
    keylog.write_text("\n".join([good[0], "garbage that is no key log line", *good[1:5], "CLIENT_RANDOM zz 00",
                                 *good[5:]]) + "\n")
    out = tmp_path / "out"
    code = cli_main(["analyze", str(run), "--inventory", str(run / "inventory.yaml"), "--keylog", str(keylog),
                     "--out", str(out), "--quiet"])
    assert code in (0, 1, 3)
    r = pd.read_parquet(out / "requests.parquet")
    assert {"containerLogs", "exec", "portForward"} <= set(r["request_kind"].astype(str))
    a = commpath.open(run, inventory=run / "inventory.yaml", keylog=keylog)
    said = [w for w in a.warnings if str(keylog) in w]
    assert len(said) == 1 and "2 line(s)" in said[0] and "line 2" in said[0]


def test_capture_cut_mid_record_keeps_the_requests_before_the_cut(tmp_path, capsys):
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    run = CAPTURES / "default"
    whole = commpath.open(run / "cp1" / "cp1-eth0.pcap", inventory=run / "inventory.yaml",
                          keylog=run / "keylog.txt").requests
    data = (run / "cp1" / "cp1-eth0.pcap").read_bytes()
    cut = tmp_path / "cp1-eth0.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3 + 7])      # inside a record
    code = cli_main(["analyze", str(cut), "--inventory", str(run / "inventory.yaml"), "--keylog",
                     str(run / "keylog.txt"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (0, 1, 3) and "Traceback" not in err
    assert sum(1 for line in err.splitlines() if str(cut) in line and "warning" in line) == 1
    part = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    assert 0 < len(part) < len(whole)
    # what was read before the cut is what the whole capture gives for those frames
    head = whole[whole["frame"] <= part["frame"].max()]
    assert part["frame"].tolist() == head["frame"].tolist()
    assert part["path"].tolist() == head["path"].tolist()


def test_without_tshark_the_run_says_so_and_goes_on(tmp_path, monkeypatch):
    from commpath.decode._native import kernels
    kernels()                                          # built (or found) while a compiler is on PATH
    run = CAPTURES / "default"
    monkeypatch.setenv("PATH", str(tmp_path))          # no tshark on PATH: a real missing tool
    a = commpath.open(run, inventory=run / "inventory.yaml", keylog=run / "keylog.txt")
    assert a.requests.empty
    assert any("tshark not found" in w for w in a.warnings)


def test_sanitize_keylog_counts_and_keeps(tmp_path):
    src = tmp_path / "k.txt"
    src.write_text("# c\nCLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\nnope\n\nX y z\n")
    kept, skipped, first = sanitize_keylog(src, tmp_path / "o.txt")
    assert (kept, skipped, first) == (1, 2, 3)
    assert (tmp_path / "o.txt").read_text().startswith("CLIENT_RANDOM ")


def test_redaction_of_targets():
    assert redact_target("/exec/ns/p/c?command=sh&command=-c&command=echo%20$PW&stdin=1") == \
        "/exec/ns/p/c?command=REDACTED&command=REDACTED&command=REDACTED&stdin=1"
    assert redact_target("/containerLogs/ns/p/c?token=abc&follow=1") == "/containerLogs/ns/p/c?token=REDACTED&follow=1"


def test_labels_follow_the_rules():
    flows = pd.DataFrame({"flow_id": [1, 2, 3, 4], "path": ["apiserver-to-kubelet", "metrics-to-kubelet",
                                                            "apiserver-proxy", "apiserver-proxy"],
                          "dst_role": ["kubelet", "kubelet", "service", "unknown"],
                          "dst_ip": ["10.0.0.2"] * 4, "dst_port": [10250, 10250, 80, 81]})
    req = pd.DataFrame({"flow_id": [1, 1, 2, 2, 3, 4, 1], "path": [
        "/attach/ns/pod/c?stdin=1", "/runningpods/", "/metrics/resource", "/stats/summary", "/x", "/y", "/api/v1/x"]})
    out = label_requests(req, flows)
    assert out["request_kind"].astype(str).tolist() == ["attach", "pods", "metrics", "stats", "proxy-service",
                                                         "proxy", "other"]
    assert out["target"].tolist()[:1] == ["ns/pod/c"] and out["target"].iloc[4] == "10.0.0.2:80"
    assert list(out["request_kind"].cat.categories) == request_kinds()


def test_request_kinds_yaml_is_validated(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("paths: [apiserver-to-kubelet]\nkinds:\n  - kind: x\n    paths: [apiserver-to-kubelet]\n"
                   "    url: '(['\n    title: t\n    reference: {anchor: a, quote: q}\n")
    with pytest.raises(InputError, match=r"r.yaml:5: kinds\[0\].url: not a regular expression"):
        load_request_kinds(str(bad))
    bad.write_text("paths: [no-such-path]\nkinds: []\n")
    with pytest.raises(InputError, match="no-such-path"):
        load_request_kinds(str(bad))


def test_per_path_tables_plot_and_evidence(tmp_path):
    """The default lab run with its key log: the per-path request table in HTML and Markdown, the plot,
    and the `decrypted` evidence of the kubelet and proxy paths; without the key log, evidence that says
    what a key log would settle."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    from commpath.check.decrypted import decrypted_path_entries
    from commpath.present.requests_view import plot_requests, request_counts, request_summary
    run = CAPTURES / "default"
    a = commpath.open(run, inventory=run / "inventory.yaml", keylog=run / "keylog.txt")
    s = request_summary(a, "apiserver-to-kubelet")
    assert int(s["requests"].sum()) == int((a.requests["flow_path"] == "apiserver-to-kubelet").sum())
    assert set(s["request_kind"]) == {"containerLogs", "exec", "portForward"}
    counts = request_counts(a)
    assert int(counts[["tls", "plain"]].to_numpy().sum()) == len(a.requests)
    fig = plot_requests(a)
    assert len(fig.axes[0].patches) == 2 * len(counts)
    a.report(tmp_path / "r", formats=("html", "md"))
    page = (tmp_path / "r.html").read_text()
    assert '<section id="requests">' in page and "<code>/containerLogs/default/pod1/app</code>" in page
    assert "command=" not in page
    md = (tmp_path / "r.md").read_text()
    assert "## Requests per path" in md and "| apiserver-proxy | proxy-node | GET | / | HTTP/1.1 | **plain HTTP**" in md
    kubelet = decrypted_path_entries(a.requests, "apiserver-to-kubelet")
    assert [e["source"] for e in kubelet] == ["decrypted"]
    assert "/containerLogs, /exec, /portForward" in kubelet[0]["said"] and "frames 81" in kubelet[0]["where"]
    proxy = decrypted_path_entries(a.requests, "apiserver-proxy")
    assert any("plain HTTP" in e["said"] for e in proxy)
    # without the key log: not decrypted, and which source would settle it
    b = commpath.open(run, inventory=run / "inventory.yaml")
    said = decrypted_path_entries(b.requests, "apiserver-to-kubelet")
    assert len(said) == 1 and said[0]["said"].startswith("not decrypted") and "key log" in said[0]["said"]
    assert decrypted_path_entries(b.requests, "metrics-to-kubelet") == []


def test_plain_requests_without_keylog_match_tshark_with_it():
    """Clear-text proxy requests need no key log: read from commpath's own HTTP table they equal what tshark
    reads of the same connections (frames, method, path, Host, status, response frame, labels)."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    run = CAPTURES / "default"
    with_keys = commpath.open(run, inventory=run / "inventory.yaml", keylog=run / "keylog.txt").requests
    without = commpath.open(run, inventory=run / "inventory.yaml").requests
    cols = ["flow_id", "frame", "response_frame", "version", "method", "path", "authority", "status",
            "request_kind", "target", "flow_path"]
    plain = with_keys[~with_keys["encrypted"]][cols].reset_index(drop=True)
    assert len(plain) == 10 and not without["encrypted"].any()
    pd.testing.assert_frame_equal(plain, without[cols].reset_index(drop=True))


def test_reloaded_folder_keeps_what_was_not_decrypted(tmp_path):
    """An analyze folder read back says the same of the kubelet path: not decrypted, and why."""
    from commpath.check.decrypted import decrypted_path_entries
    run = CAPTURES / "default"
    out = tmp_path / "out"
    cli_main(["analyze", str(run), "--inventory", str(run / "inventory.yaml"), "--out", str(out), "-q"])
    fresh = commpath.open(run, inventory=run / "inventory.yaml").requests
    again = commpath.open(out).requests
    assert decrypted_path_entries(again, "apiserver-to-kubelet") == decrypted_path_entries(fresh, "apiserver-to-kubelet")
    assert decrypted_path_entries(again, "apiserver-proxy") == decrypted_path_entries(fresh, "apiserver-proxy")


@pytest.mark.parametrize("form", ["pcapng", "gzip"])
def test_pcapng_and_gzip_captures_give_the_same_requests(tmp_path, form):
    """The slice keeps Wireshark's frame numbers whatever the file format (pcapng blocks, gzip)."""
    if shutil.which("tshark") is None or shutil.which("editcap") is None:
        pytest.skip("needs tshark and editcap")
    import gzip
    run = CAPTURES / "default"
    src = run / "cp1" / "cp1-eth0.pcap"
    if form == "pcapng":
        other = tmp_path / "cp1-eth0.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", str(src), str(other)], check=True, capture_output=True, timeout=120)
    else:
        other = tmp_path / "cp1-eth0.pcap.gz"
        other.write_bytes(gzip.compress(src.read_bytes()))
    cols = ["frame", "response_frame", "stream_id", "method", "path", "status", "request_kind"]
    want = commpath.open(src, inventory=run / "inventory.yaml", keylog=run / "keylog.txt").requests[cols]
    got = commpath.open(other, inventory=run / "inventory.yaml", keylog=run / "keylog.txt").requests[cols]
    assert len(want) > 20
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def test_hostile_request_text_is_escaped_in_html_and_markdown():
    from commpath.present.markdown import build_markdown
    from commpath.present.requests_view import requests_html
    import dataclasses
    run = CAPTURES / "default"
    a = commpath.open(run, inventory=run / "inventory.yaml")
    r = a.requests.copy()
    assert len(r)
    r["path"] = r["path"].astype("string")
    r.loc[r.index[0], "path"] = "/x<script>alert(1)</script>|`y`?q=1"
    r.loc[r.index[0], "method"] = "G<b>ET"
    b = dataclasses.replace(a, requests=r)
    page = requests_html(b, str(r["flow_path"].iloc[0]))
    assert "<script>" not in page and "&lt;script&gt;" in page and "G&lt;b&gt;ET" in page
    md = build_markdown(b)
    line = next(l for l in md.splitlines() if "alert(1)" in l)
    assert "<script>" not in md and "\\|" in line and line.count(" | ") == 9


def test_paths_evidence_in_report_json_carries_the_decrypted_source(tmp_path):
    """The path's evidence joins the wire and the decrypted requests (report.json, `source: decrypted`)."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    import json
    run = CAPTURES / "default"
    out = tmp_path / "out"
    cli_main(["analyze", str(run), "--inventory", str(run / "inventory.yaml"), "--keylog", str(run / "keylog.txt"),
              "--out", str(out), "-q"])
    report = json.loads((out / "report.json").read_text())
    paths = {p["id"]: p for p in report["paths"]}
    kubelet = [e for e in paths["apiserver-to-kubelet"]["evidence"] if e["source"] == "decrypted"]
    assert len(kubelet) == 1 and "containerLogs" in kubelet[0]["said"] and "frames" in kubelet[0]["where"]
    sources = [e["source"] for e in paths["apiserver-proxy"]["evidence"]]
    assert sources[0] == "wire" and "decrypted" in sources
    assert any("plain HTTP" in e["said"] for e in paths["apiserver-proxy"]["evidence"] if e["source"] == "wire")
    assert "decrypted" in report.get("coverage", {}).get("sources", ["decrypted"])


@needs_tools
def test_a_client_other_than_the_apiserver_is_a_metrics_scrape(kubelet_run, tmp_path):
    """The same connections with 127.0.0.1 a node, not the apiserver: metrics-to-kubelet, labelled alike."""
    from commpath.check.decrypted import decrypted_path_entries
    inv = tmp_path / "inventory.yaml"
    inv.write_text("apiVersion: commpath/v1\nkind: Inventory\napiserver: {endpoints: ['127.0.0.9:6443']}\n"
                   "control_plane: [{name: cp1, addresses: ['127.0.0.9']}]\n"
                   "nodes: [{name: node1, addresses: ['127.0.0.2']}, {name: node2, addresses: ['127.0.0.1']}]\n"
                   f"kubelet_port: {kubelet_run['port']}\n")
    a = commpath.open(kubelet_run["pcap"], inventory=inv, keylog=kubelet_run["keylog"])
    r = a.requests
    assert len(r) and set(r["flow_path"].astype(str)) == {"metrics-to-kubelet"}
    sent = {**H2_PATHS, **UPGRADE_PATHS}
    assert set(r["request_kind"].astype(str)) <= set(sent)
    said = decrypted_path_entries(r, "metrics-to-kubelet")
    assert said and "the kubelet endpoints called" in said[0]["said"]


def test_a_closed_capture_is_read_once_for_repeated_judgements(tmp_path):
    """`commpath watch` judges its window again as files arrive: an unchanged capture's reading is reused
    (same rows, no tshark run); a changed file is read again."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    from commpath._requests import decode_hints
    from commpath.classify.requests import decrypted_connections
    from commpath.decode.requests import decrypt_requests
    run = CAPTURES / "default"
    pcap = tmp_path / "cp1-eth0.pcap"
    shutil.copy(run / "cp1" / "cp1-eth0.pcap", pcap)
    a = commpath.open(pcap, inventory=run / "inventory.yaml")
    conns = decrypted_connections(a.flows)
    cols = ["flow_id", "capture", "first_frame", "last_frame", "src_ip", "src_port", "dst_ip", "dst_port"]
    first = decrypt_requests(conns[cols], run / "keylog.txt", decode_as=decode_hints(conns, a.tls))
    again = decrypt_requests(conns[cols], run / "keylog.txt", decode_as=decode_hints(conns, a.tls))
    assert first.tshark_runs == 1 and again.tshark_runs == 0 and again.reused == 1
    pd.testing.assert_frame_equal(first.requests, again.requests)
    shifted = conns[cols].assign(flow_id=conns["flow_id"] + 1000)      # a later window numbers flows anew
    moved = decrypt_requests(shifted, run / "keylog.txt", decode_as=decode_hints(conns, a.tls))
    assert moved.reused == 1 and (moved.requests["flow_id"] == first.requests["flow_id"] + 1000).all()
    pcap.write_bytes(pcap.read_bytes())                                 # the file changed: read anew
    import os
    os.utime(pcap, ns=(1, 1))
    fresh = decrypt_requests(conns[cols], run / "keylog.txt", decode_as=decode_hints(conns, a.tls))
    assert fresh.tshark_runs == 1 and fresh.reused == 0
