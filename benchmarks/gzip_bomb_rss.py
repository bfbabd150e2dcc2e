"""Peak memory of reading a gzip bomb: 1 MB of gzip that inflates to 1 GiB of zeros.

    python benchmarks/gzip_bomb_rss.py            # prints peak RSS (MiB) of a fresh interpreter per case

Two cases: a pcap header followed by zeros (read to the end as empty records) and zeros alone (no
capture: rejected by its first bytes). ``import commpath`` alone is printed as the floor.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def bomb(path: Path, head: bytes, total: int = 1 << 30) -> Path:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    with path.open("wb") as fh:
        fh.write(z.compress(head))
        for _ in range(total >> 20):
            fh.write(z.compress(block))
        fh.write(z.flush())
    return path


def peak_rss(code: str) -> tuple[int, float]:
    prog = code + "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]), time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cp-bomb-") as tmp:
        cases = {"pcap header + zeros": bomb(Path(tmp) / "zeros.pcap.gz", PCAP_HEADER),
                 "zeros (not a capture)": bomb(Path(tmp) / "zeros.bin.gz", b"")}
        floor, _ = peak_rss("import commpath")
        print(f"import commpath alone: {floor} MiB")
        for name, path in cases.items():
            code = ("import commpath\nfrom commpath.errors import InputError\n"
                    f"try:\n    commpath.read({str(path)!r})\nexcept InputError:\n    pass")
            rss, wall = peak_rss(code)
            print(f"{name}: {path.stat().st_size / 1e6:.2f} MB gzip -> peak RSS {rss} MiB, {wall:.1f} s")


if __name__ == "__main__":
    main()
