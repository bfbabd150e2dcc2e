"""Seed corpora for every fuzz target, cut from the bundled lab captures and the public ones.

``python fuzz/make_corpus.py [OUT]`` (default ``fuzz/corpus``, not committed): per target a folder of
small inputs: both directions of real TLS, SSH and HTTP connections (framed as ``targets.flow_of``
reads them), the certificates of their handshakes, and the first records of each capture file in
pcap and pcapng form; the C targets get the same material in their own framing (``c/harness.c``).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import commpath  # noqa: E402
from commpath.decode.tls import parse_tls  # noqa: E402

from targets import frame_two  # noqa: E402

PUBLIC = ROOT.parent / "shared" / "pcaps" / "public"
PER_TARGET = 300          # seeds per target and kind: enough variety, small on disk
MAX_SEED = 16384          # bytes per seed (libFuzzer's -max_len of the campaign)


def captures() -> list[Path]:
    found = sorted((ROOT / "captures").rglob("*.pcap"))
    if PUBLIC.exists():
        found += sorted(p for p in PUBLIC.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    return found


def first_records(path: Path, limit: int = MAX_SEED) -> bytes:
    """The file's header and whole records up to ``limit`` bytes (pcap: 16-byte record headers)."""
    data = path.read_bytes()[:4 * limit]
    if data[:4] == b"\x0a\x0d\x0d\x0a":             # pcapng: whole blocks
        big = data[8:12] == b"\x1a\x2b\x3c\x4d"
        pos = 0
        while pos + 12 <= len(data):
            blen = struct.unpack(">I" if big else "<I", data[pos + 4:pos + 8])[0]
            if blen < 12 or pos + blen > limit:
                break
            pos += blen
        return data[:pos]
    if len(data) < 24:
        return data
    big = data[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack(">I" if big else "<I", data[pos + 8:pos + 12])[0]
        if pos + 16 + incl > limit:
            break
        pos += 16 + incl
    return data[:pos]


class Corpus:
    def __init__(self, out: Path):
        self.out = out
        self.counts: dict[str, int] = {}

    def add(self, target: str, data: bytes) -> None:
        if not data or len(data) > MAX_SEED or self.counts.get(target, 0) >= PER_TARGET:
            return
        folder = self.out / target
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
            self.counts[target] = self.counts.get(target, 0) + 1


def as_pcapng(head: bytes) -> bytes:
    """The same records as pcapng (Wireshark's editcap converts; without it, no pcapng seed)."""
    if not shutil.which("editcap"):
        return b""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pcap", Path(tmp) / "out.pcapng"
        src.write_bytes(head)
        done = subprocess.run(["editcap", "-F", "pcapng", str(src), str(dst)], capture_output=True)
        return dst.read_bytes() if done.returncode == 0 and dst.exists() else b""


#: chunked bodies as servers send them: plain lines, extensions, trailers, upper-case hex, a cut one
CHUNKED = [b"5\r\nhello\r\n0\r\n\r\n", b"A;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
           b"1f\r\n" + b"x" * 31 + b"\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n", b"FFFFFFFF\r\nabc"]


def main(out: Path) -> dict[str, int]:
    corpus = Corpus(out)
    for body in CHUNKED:
        corpus.add("c_http_chunks", b"\x00\x00" + body)
        response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        corpus.add("http", frame_two(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", response))
    for path in captures():
        head = first_records(path)
        if head[:4] != b"\x0a\x0d\x0d\x0a" and len(head) > 24 and \
                corpus.counts.get("c_pcapng", 0) < PER_TARGET // 3:
            converted = as_pcapng(head)
            for target in ("pcap_reader", "engine", "c_pcapng"):
                corpus.add(target, converted)
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            corpus.add("pcap_reader", head)
            corpus.add("engine", head)
            corpus.add("c_pcapng", head)
        elif len(head) > 24:
            corpus.add("pcap_reader", head)
            corpus.add("engine", head)
            big = head[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
            linktype = struct.unpack(">I" if big else "<I", head[20:24])[0] & 0xFFFF
            corpus.add("c_pcap", bytes([int(big)]) + linktype.to_bytes(2, "big") + head[24:])
        try:
            cap = commpath.read(str(path))
        except commpath.CommpathError:
            continue
        for fs in cap.streams.values():
            cli, srv = fs.fwd.data[:MAX_SEED // 2], fs.rev.data[:MAX_SEED // 2]
            if not cli and not srv:
                continue
            two = frame_two(cli, srv)
            proto = fs.app_protocol
            if proto == "tls":
                for target in ("tls", "c_tls_walk"):
                    corpus.add(target, two)
                corpus.add("handshakes", two + b"\x01")    # options: verify against the lab's CA
                hs = parse_tls(fs)
                for der in hs.server_chain + hs.client_chain:
                    corpus.add("x509", der)
            elif proto == "ssh":
                corpus.add("ssh", two)
                corpus.add("handshakes", two + b"\x00")
            elif proto in ("http", "http2"):
                corpus.add("http", two)
                corpus.add("handshakes", two + b"\x00")
                for body in (cli, srv):
                    at = body.find(b"\r\n\r\n")
                    if at > 0 and b"chunked" in body[:at].lower():
                        corpus.add("c_http_chunks", (at + 4).to_bytes(2, "big") + body)
    return corpus.counts


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    for name, count in sorted(main(target).items()):
        print(f"{name}: {count} seeds")
