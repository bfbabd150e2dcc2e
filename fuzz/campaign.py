"""Build and run the fuzz targets: ``python fuzz/campaign.py [--runs N] [--seconds S] [TARGET ...]``.

Python targets (``targets.py``) run under atheris through ``run.py``; the C targets (``c_*``) are
``c/harness.c`` built with clang's libFuzzer and AddressSanitizer into ``fuzz/build/``. Each run
starts from the seed corpus (``make_corpus.py``, built on first use) with the dictionary
``commpath.dict``; new inputs go to ``fuzz/work/<target>/`` and crashes to ``fuzz/crashes/``, both
left out of git. Prints one line per target: inputs executed, crashes, seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
C_SOURCES = sorted((ROOT / "commpath" / "decode" / "_c").glob("*.c"))
PYTHON_TARGETS = ("tls", "x509", "ssh", "http", "handshakes", "pcap_reader", "engine")
C_TARGETS = ("c_tls_walk", "c_pcap", "c_pcapng", "c_http_chunks")
TARGETS = PYTHON_TARGETS + C_TARGETS
MAX_LEN = 16384


def clang() -> str | None:
    return shutil.which(os.environ.get("FUZZ_CC", "clang"))


def build_c(target: str) -> Path:
    """The libFuzzer binary of a C target, rebuilt when the harness or a kernel changed."""
    out = HERE / "build" / target
    inputs = [HERE / "c" / "harness.c", *C_SOURCES]
    if out.exists() and out.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return out
    cc = clang()
    if cc is None:
        raise RuntimeError("the C targets need clang with libFuzzer (apt install clang libclang-rt-dev)")
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, "-g", "-O1", "-fsanitize=fuzzer,address", f"-DTARGET_{target[2:].upper()}", "-o",
                    str(tmp), *map(str, inputs), "-lm"], check=True, capture_output=True, text=True)
    tmp.replace(out)
    return out


def seeds(target: str, corpus: Path | None = None) -> Path:
    corpus = corpus or HERE / "corpus"
    if not corpus.exists():
        subprocess.run([sys.executable, str(HERE / "make_corpus.py"), str(corpus)], check=True,
                       capture_output=True, text=True)
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Result:
    def __init__(self, target: str, runs: int, crashed: bool, seconds: float, output: str):
        self.target, self.runs, self.crashed, self.seconds, self.output = target, runs, crashed, seconds, output

    def line(self) -> str:
        return f"{self.target}: {self.runs} inputs, {int(self.crashed)} crashes, {self.seconds:.0f} s"


def run(target: str, runs: int | None = None, seconds: int | None = None, root: Path | None = None,
        extra: tuple[str, ...] = ()) -> Result:
    """Fuzz one target for ``runs`` inputs or ``seconds`` (whichever ends first).

    ``root``: where the seed corpus, new inputs and crashes go (default: ``fuzz/`` itself)."""
    if target in C_TARGETS:
        cmd = [str(build_c(target))]
    elif target in PYTHON_TARGETS:
        cmd = [sys.executable, str(HERE / "run.py"), target]
    else:
        raise ValueError(f"no fuzz target {target!r}; targets: {', '.join(TARGETS)}")
    work = (root or HERE) / "work" / target
    crashes = (root or HERE) / "crashes" / target
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    cmd += [f"-dict={HERE / 'commpath.dict'}", f"-max_len={MAX_LEN}", "-timeout=30", "-rss_limit_mb=3072",
            f"-artifact_prefix={crashes}/", "-print_final_stats=1", *extra]
    if runs is not None:
        cmd.append(f"-runs={runs}")
    if seconds is not None:
        cmd.append(f"-max_total_time={seconds}")
    cmd += [str(work), str(seeds(target, root / "corpus" if root else None))]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    text = done.stdout + done.stderr
    counted = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text) or re.findall(r"Done (\d+) runs", text)
    crashed = done.returncode != 0 or "ERROR: libFuzzer" in text or "Uncaught Python exception" in text
    return Result(target, int(counted[-1]) if counted else 0, crashed, time.monotonic() - t0, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--runs", type=int, help="inputs per target")
    ap.add_argument("--seconds", type=int, help="time budget per target")
    args = ap.parse_args()
    failed = 0
    for target in args.targets:
        res = run(target, args.runs, args.seconds)
        print(res.line(), flush=True)
        if res.crashed:
            failed += 1
            print(res.output[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
