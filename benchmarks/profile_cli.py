"""Profile one commpath command in this interpreter by CPU time (cProfile with a process-time clock).

    python benchmarks/profile_cli.py OUT.prof analyze CAPTURE --out DIR -q

prints the 40 costliest functions by own and by cumulative CPU time and writes the profile to
OUT.prof (``python -m pstats OUT.prof``). On a loaded machine a wall-clock profiler charges a
function for the time the process waited for a core; the process-time clock does not. For a
sampling view with C frames, ``py-spy record -f raw -o OUT.raw -- python -m commpath.cli ...``
(``pip install py-spy``, in the ``bench`` extra).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    import commpath.cli
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        code = commpath.cli.main(argv[1:])
    finally:
        profile.disable()
        profile.dump_stats(argv[0])
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(40)
        print(out.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
