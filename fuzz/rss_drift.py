"""A target's memory over many mutated inputs without libFuzzer: ``python fuzz/rss_drift.py [--inputs N] TARGET``.

libFuzzer stops a campaign at ``-rss_limit_mb`` whatever grew: the target or the fuzzing process itself
(atheris's coverage maps, libFuzzer's corpus and feature tables). This runs the same target function on
inputs mutated from the campaign's corpus in a plain interpreter and prints the resident set every
2,000 inputs, so a growth that belongs to the target shows here and one that belongs to the harness
does not.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402


def rss_mb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // (1 << 20)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few byte flips, cuts, insertions and boundary integers, as libFuzzer's simplest mutators do."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not b:
            break
        i, op = rng.randrange(len(b)), rng.random()
        if op < 0.5:
            b[i] = rng.randrange(256)
        elif op < 0.7:
            del b[i:i + rng.randint(1, 64)]
        elif op < 0.9:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff"])
    return bytes(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=sorted(targets.TARGETS))
    ap.add_argument("--inputs", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    seeds = [p.read_bytes() for d in ("work", "corpus") for p in sorted((HERE / d / args.target).glob("*"))]
    if not seeds:
        print(f"rss_drift: no corpus for {args.target} (run fuzz/campaign.py once)", file=sys.stderr)
        return 2
    rng, run = random.Random(args.seed), targets.TARGETS[args.target]
    first = None
    for i in range(args.inputs):
        run(mutate(rng.choice(seeds), rng))
        if i % 2000 == 0 or i == args.inputs - 1:
            gc.collect()
            first = first or rss_mb()
            print(f"{i + 1:>8} inputs  {rss_mb():>5} MB  (+{rss_mb() - first} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
