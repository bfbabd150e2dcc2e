"""Broken captures, built from real public ones: one clear line and exit 2, or a warning and a partial read."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import commpath
from commpath.errors import InputError
from oracles import compare as cmp
from oracles import tshark

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
TLS12 = PUBLIC / "zeek/testing/btest/Traces/tls/tls1.2.pcap"              # Ethernet, 22 packets
BIG_GZ = PUBLIC / "zeek/testing/btest/Traces/tls/tls-fragmented-handshake.pcap.gz"   # 416 packets
LOOPBACK = PUBLIC / "arkime/http2-nghttp2.pcap"                         # BSD loopback (NULL)

needs_tools = pytest.mark.skipif(shutil.which("editcap") is None or tshark.TSHARK is None,
                                 reason="needs editcap/mergecap/tshark (apt install tshark)")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "commpath", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset, captured length) of each record of a little-endian microsecond pcap."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append((off, incl))
        off += 16 + incl
    return out


def pcapng_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, block type, total length) of each block of a little-endian pcapng file."""
    out, off = [], 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        out.append((off, btype, blen))
        off += blen
    return out


# ------------------------------------------------------------------ inputs nothing can be read from

def _zero_length(tmp: Path) -> Path:
    p = tmp / "empty.pcap"
    p.write_bytes(b"")
    return p


def _garbage(tmp: Path) -> Path:
    p = tmp / "garbage.pcap"
    p.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(5000)))
    return p


def _text_file(tmp: Path) -> Path:
    p = tmp / "notes.pcap"
    p.write_text("this is not a capture\n" * 20)
    return p


def _wrong_magic(tmp: Path) -> Path:
    p = tmp / "wrong-magic.pcap"
    p.write_bytes(b"\xde\xad\xbe\xef" + TLS12.read_bytes()[4:])
    return p


def _header_cut(tmp: Path) -> Path:
    p = tmp / "header-cut.pcap"
    p.write_bytes(TLS12.read_bytes()[:10])
    return p


def _unknown_linktype(tmp: Path) -> Path:
    d = TLS12.read_bytes()
    p = tmp / "linktype-147.pcap"
    p.write_bytes(d[:20] + struct.pack("<I", 147) + d[24:])   # LINKTYPE_USER0
    return p


def _missing(tmp: Path) -> Path:
    return tmp / "does-not-exist.pcap"


def _gzip_garbage(tmp: Path) -> Path:
    p = tmp / "garbage.pcap.gz"
    p.write_bytes(gzip.compress(b"no capture in here\n" * 100))
    return p


def _gzip_cut_in_header(tmp: Path) -> Path:
    p = tmp / "cut-early.pcap.gz"
    p.write_bytes(BIG_GZ.read_bytes()[:30])          # not even the pcap file header decompresses
    return p


def _empty_folder(tmp: Path) -> Path:
    p = tmp / "no-captures-here"
    p.mkdir()
    (p / "readme.txt").write_text("nothing\n")
    return p


UNUSABLE = {
    "zero-length": (_zero_length, r"empty"),
    "garbage": (_garbage, r"not a pcap"),
    "text": (_text_file, r"not a pcap"),
    "wrong-magic": (_wrong_magic, r"not a pcap"),
    "header-cut": (_header_cut, r"header"),
    "unknown-linktype": (_unknown_linktype, r"link type"),
    "missing": (_missing, r"no such file"),
    "gzip-of-garbage": (_gzip_garbage, r"not a pcap"),
    "gzip-cut-in-header": (_gzip_cut_in_header, r"compressed|ended|cut"),
    "folder-without-captures": (_empty_folder, r"no capture"),
}


def _assert_one_line_error(proc: subprocess.CompletedProcess, path: Path, reason: str) -> None:
    import re

    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert path.name in lines[0], lines[0]
    assert re.search(reason, lines[0], re.I), lines[0]


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_input_flows_command(case, tmp_path):
    build, reason = UNUSABLE[case]
    path = build(tmp_path)
    _assert_one_line_error(cli("flows", str(path)), path, reason)


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_input_read_raises_input_error(case, tmp_path):
    import re

    build, reason = UNUSABLE[case]
    path = build(tmp_path)
    with pytest.raises(InputError) as info:
        commpath.read(path)
    assert Path(info.value.file).name == path.name
    assert re.search(reason, info.value.reason, re.I)
    assert "\n" not in str(info.value)
    # the same error once it crossed a process boundary (a Dask worker's, a multiprocessing child's)
    again = pickle.loads(pickle.dumps(info.value))
    assert (type(again), again.file, again.reason, str(again)) == (InputError, info.value.file, info.value.reason,
                                                                   str(info.value))


@pytest.mark.parametrize("case", ["zero-length", "garbage", "unknown-linktype"])
def test_unusable_input_analyze_command(case, tmp_path):
    build, reason = UNUSABLE[case]
    path = build(tmp_path)
    _assert_one_line_error(cli("analyze", str(path), "--out", str(tmp_path / "out")), path, reason)


def test_several_unusable_inputs_give_one_line(tmp_path):
    a, b = _garbage(tmp_path), _zero_length(tmp_path)
    proc = cli("flows", str(a), str(b))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ inputs read in part

def _record_cut(tmp: Path) -> Path:
    d = TLS12.read_bytes()
    off, incl = pcap_records(d)[-1]
    p = tmp / "record-cut.pcap"
    p.write_bytes(d[: off + 16 + incl // 2])          # last record's data cut in the middle
    return p


def _record_header_cut(tmp: Path) -> Path:
    d = TLS12.read_bytes()
    off, _ = pcap_records(d)[-1]
    p = tmp / "record-header-cut.pcap"
    p.write_bytes(d[: off + 9])                        # file ends inside the last record header
    return p


def _corrupt_record_length(tmp: Path) -> Path:
    d = bytearray(TLS12.read_bytes())
    off, _ = pcap_records(bytes(d))[10]
    struct.pack_into("<I", d, off + 8, 0x7FFFFF00)     # 11th record claims 2 GB
    p = tmp / "corrupt-record-length.pcap"
    p.write_bytes(bytes(d))
    return p


def _gzip_truncated(tmp: Path) -> Path:
    d = BIG_GZ.read_bytes()
    p = tmp / "truncated.pcap.gz"
    p.write_bytes(d[: len(d) // 2])
    return p


def _pcapng(tmp: Path, src: Path = TLS12) -> Path:
    p = tmp / (src.name.split(".")[0] + ".pcapng")
    subprocess.run(["editcap", "-F", "pcapng", str(src), str(p)], check=True, capture_output=True)
    return p


def _pcapng_block_cut(tmp: Path) -> Path:
    d = _pcapng(tmp).read_bytes()
    off, _, blen = pcapng_blocks(d)[-1]
    p = tmp / "block-cut.pcapng"
    p.write_bytes(d[: off + blen // 2])
    return p


def _pcapng_bad_block_length(tmp: Path) -> Path:
    d = bytearray(_pcapng(tmp).read_bytes())
    epbs = [b for b in pcapng_blocks(bytes(d)) if b[1] == 6]
    off = epbs[12][0]
    struct.pack_into("<I", d, off + 4, 7)              # a block length that is not a multiple of 4, < 12
    p = tmp / "bad-block-length.pcapng"
    p.write_bytes(bytes(d))
    return p


def _pcapng_one_unknown_interface(tmp: Path) -> Path:
    """Two interfaces (Ethernet, BSD loopback) merged by mergecap; the loopback one relabelled 147."""
    merged = tmp / "two-interfaces.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), str(TLS12), str(LOOPBACK)],
                   check=True, capture_output=True)
    d = bytearray(merged.read_bytes())
    idbs = [b for b in pcapng_blocks(bytes(d)) if b[1] == 1]
    assert len(idbs) == 2
    for off, _, _ in idbs:
        if struct.unpack_from("<H", d, off + 8)[0] == 0:   # DLT_NULL
            struct.pack_into("<H", d, off + 8, 147)
    p = tmp / "one-unknown-interface.pcapng"
    p.write_bytes(bytes(d))
    return p


PARTIAL = {
    "record-cut": _record_cut,
    "record-header-cut": _record_header_cut,
    "corrupt-record-length": _corrupt_record_length,
    "gzip-truncated": _gzip_truncated,
    "pcapng-block-cut": _pcapng_block_cut,
    "pcapng-bad-block-length": _pcapng_bad_block_length,
}


def _tshark_readable(path: Path, tmp: Path) -> Path:
    """The part tshark can read, rewritten as a clean pcap (the oracle for the partial read)."""
    src = path
    if path.name.endswith(".gz"):
        import zlib

        raw = zlib.decompressobj(31).decompress(path.read_bytes())   # what the gzip stream gives
        src = tmp / "gunzipped.pcap"
        src.write_bytes(raw)
    out = tmp / "readable.pcap"
    subprocess.run([tshark.TSHARK, "-r", str(src), "-F", "pcap", "-w", str(out)], capture_output=True)
    return out


@needs_tools
@pytest.mark.parametrize("case", list(PARTIAL))
def test_partial_input_is_read_up_to_the_damage(case, tmp_path):
    path = PARTIAL[case](tmp_path)
    proc = cli("flows", str(path))
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and path.name in warnings[0], proc.stderr

    cap = commpath.read(path)
    assert cap.partial and bool(cap.captures["partial"].iloc[0])
    assert cap.warnings and path.name in cap.warnings[0]
    readable = _tshark_readable(path, tmp_path)
    expected = len(tshark.frames(readable))
    assert expected > 0
    assert int(cap.captures["packets"].iloc[0]) == expected
    problems = cmp.compare(cap.flows, tshark.connections(readable))
    assert not problems, "\n".join(problems)


@needs_tools
def test_partial_input_analyze_writes_outputs(tmp_path):
    path = _record_cut(tmp_path)
    out = tmp_path / "out"
    proc = cli("analyze", str(path), "--out", str(out))
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1, 3), proc.stderr   # 3: no inventory, the run is inconclusive
    assert any("warning" in line and path.name in line for line in proc.stderr.splitlines())
    import pandas as pd

    flows = pd.read_parquet(out / "flows.parquet")
    assert len(flows) == 1


@needs_tools
def test_snaplen_cut_packets_keep_wire_lengths(tmp_path):
    """``editcap -s 60`` cuts every packet: counts still use the lengths on the wire, as tshark's frame.len."""
    cut = tmp_path / "snaplen-60.pcap"
    subprocess.run(["editcap", "-s", "60", str(TLS12), str(cut)], check=True, capture_output=True)
    proc = cli("flows", str(cut))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert sum("warning" in line and cut.name in line for line in proc.stderr.splitlines()) == 1
    cap = commpath.read(cut)
    whole = commpath.read(TLS12)
    assert not cap.partial
    oracle = tshark.frames(cut)
    cut_frames = int((oracle["cap_len"] < oracle["len"]).sum())
    assert cut_frames > 0
    assert int(cap.flows["truncated_packets"].sum()) == cut_frames
    for col in ("packets", "bytes", "bytes_fwd", "bytes_rev", "payload_fwd", "payload_rev", "first_frame", "last_frame"):
        assert cap.flows[col].tolist() == whole.flows[col].tolist(), col
    problems = cmp.compare(cap.flows, tshark.connections(cut))
    assert not problems, "\n".join(problems)


@needs_tools
def test_one_unsupported_interface_of_two(tmp_path):
    """A pcapng whose second interface has an unknown link type: the first is read, a warning names the rest."""
    path = _pcapng_one_unknown_interface(tmp_path)
    proc = cli("flows", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert any("warning" in line and path.name in line and "link type" in line for line in proc.stderr.splitlines())
    cap = commpath.read(path)
    assert cap.partial, "packets that could not be decoded make the read partial"
    ethernet = commpath.read(TLS12)
    assert len(cap.flows) == len(ethernet.flows) == 1
    assert cap.flows["packets"].tolist() == ethernet.flows["packets"].tolist()


def test_folder_with_one_bad_file(tmp_path):
    """A folder of captures with one garbage file: the good one is read, one warning names the bad one."""
    folder = tmp_path / "captures"
    folder.mkdir()
    shutil.copy(TLS12, folder / "good.pcap")
    _garbage(folder)
    proc = cli("flows", str(folder))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "garbage.pcap" in warnings[0]
    cap = commpath.read(folder)
    assert len(cap.flows) == 1 and cap.partial
    assert set(Path(f).name for f in cap.captures["file"]) == {"good.pcap", "garbage.pcap"}


def test_damaged_packets_do_not_stop_the_read(tmp_path):
    """Record bodies overwritten with junk (headers kept): every record is read, no traceback."""
    d = bytearray(TLS12.read_bytes())
    recs = pcap_records(bytes(d))
    for k, (off, incl) in enumerate(recs):
        for i in range(14, incl, 3):                 # IP/TCP headers and payload, Ethernet header kept
            d[off + 16 + i] = (d[off + 16 + i] * 31 + k + i) & 0xFF
    path = tmp_path / "junk-packets.pcap"
    path.write_bytes(bytes(d))
    proc = cli("flows", str(path))
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 1
    if proc.returncode == 0:
        cap = commpath.read(path)
        assert int(cap.captures["packets"].iloc[0]) == len(recs)


# ------------------------------------------------------------------ gzip bombs

def _gzip_of_zeros(path: Path, head: bytes, total: int) -> Path:
    """``head`` then ``total`` zero bytes, gzip-compressed (about 1000:1)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    with path.open("wb") as fh:
        fh.write(z.compress(head))
        for _ in range(total >> 20):
            fh.write(z.compress(block))
        fh.write(z.flush())
    return path


def _peak_rss_mib(*code: str) -> int:
    """Peak resident memory (MiB) of a fresh interpreter that runs ``code`` (its last line prints)."""
    prog = "\n".join(code) + "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.split()[-1])


def test_gzip_bomb_of_zeros_is_rejected_without_decompressing_it(tmp_path):
    """1 MB of gzip that inflates to 1 GiB of zeros (not a capture): rejected after one bounded step.

    Decompressing each 1 MiB read whole took 2 GB of memory before the first bytes were looked at."""
    bomb = _gzip_of_zeros(tmp_path / "zeros.pcap.gz", b"", 1 << 30)
    assert bomb.stat().st_size < 2 << 20
    base = _peak_rss_mib("import commpath")
    peak = _peak_rss_mib("import commpath",
                         "from commpath.errors import InputError",
                         "try:",
                         f"    commpath.read({str(bomb)!r})",
                         "except InputError as exc:",
                         "    assert 'not a pcap or pcapng capture' in str(exc), exc",
                         "else:",
                         "    raise SystemExit('read a gzip of zeros as a capture')")
    assert peak - base < 64, (base, peak)


def test_gzip_reader_holds_at_most_one_step_beyond_what_was_asked(tmp_path):
    """However high the ratio, the decompressed buffer grows by bounded steps (``max_length``)."""
    from commpath.decode._pcapfile import _Gunzip
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    reader = _Gunzip(_gzip_of_zeros(tmp_path / "bomb.pcap.gz", head, 256 << 20))
    try:
        assert reader.read(24) == head
        assert len(reader._buf) <= 24 + _Gunzip.OUT_STEP
        view = memoryview(bytearray(1 << 20))
        seen = 0
        for _ in range(64):
            n = reader.readinto(view)
            assert n == len(view) and not any(view[:n])
            seen += n
            assert len(reader._buf) - reader._off <= _Gunzip.OUT_STEP
            assert len(reader._buf) <= (8 << 20) + 2 * _Gunzip.OUT_STEP
        assert seen == 64 << 20
    finally:
        reader.close()


def test_gzip_of_several_members_reads_to_the_end_without_error(tmp_path):
    """Concatenated gzip members are one file; a clean end between members is no damage."""
    data = TLS12.read_bytes() if TLS12.exists() else None
    if data is None:
        pytest.skip("public captures not beside the checkout")
    path = tmp_path / "two-members.pcap.gz"
    half = len(data) // 2
    path.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    cap = commpath.read(str(path))
    plain = commpath.read(str(TLS12))
    assert len(cap.flows) == len(plain.flows) and not bool(cap.captures.partial.iloc[0])
    assert cap.captures.packets.iloc[0] == plain.captures.packets.iloc[0]
