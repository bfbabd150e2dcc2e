"""`commpath watch`: its arguments (``register``) and its handler (``main``), importing the loop only when run."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

#: as commpath.check.policy.SEVERITIES, not imported from there: `commpath --help` loads no pandas
SEVERITIES = ["info", "low", "medium", "high", "critical"]
#: Where /metrics is served unless --listen says otherwise (loopback: exposing it is a choice).
DEFAULT_LISTEN = "127.0.0.1:9477"


def register(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add the `watch` command to the `commpath` subcommands (``formatter_class``: the other commands' one)."""
    text = "analyse ring files as they close; serve Prometheus metrics and a rolling report.json"
    p = sub.add_parser("watch", help=text, description=text + (
        ".\nRuns beside the capture agent (its --out folder) or on a folder that collected files arrive in;\n"
        "a file is taken once, when closed, and a restart does not count it again."),
        formatter_class=formatter_class)
    p.add_argument("inputs", nargs="+", metavar="DIR", help="agent output folder(s) or folder(s) of arriving captures")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the rolling report.json and the state file")
    p.add_argument("--inventory", metavar="FILE", help="cluster inventory (YAML)")
    p.add_argument("--policy", metavar="NAME|FILE", default="default", help="policy name or YAML file")
    p.add_argument("--ca", metavar="FILE", help="cluster CA bundle (PEM) (default: the inventory's ca_bundle)")
    p.add_argument("--keylog", metavar="FILE", help="TLS key log (NSS format) for TLS 1.3 certificates")
    p.add_argument("--probe", metavar="DIR", help="a `commpath probe --out` folder, joined as analyze --probe joins it")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="one flow per connection seen from several hosts (default: when several hosts)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where to serve Prometheus /metrics (port 0: any free port, printed on stderr)")
    p.add_argument("--window", type=float, default=3600.0, metavar="SECONDS",
                   help="the rolling window: files whose last packet is this much older than the newest go")
    p.add_argument("--max-flows", type=int, default=200_000, metavar="N",
                   help="the most flows the window holds (the oldest files go first)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="how often to look for closed files")
    p.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                   help="in folders without the agent's manifest: a file unchanged this long is closed "
                        "(0: files arrive whole, renamed into place)")
    p.add_argument("--state", metavar="FILE", help="state file (default: OUT/watch-state.json)")
    p.add_argument("--alert-at", choices=SEVERITIES, default="high",
                   help="a new finding at or above this severity is one JSON line on stdout")
    p.add_argument("--once", action="store_true",
                   help="take what is there (settle time waived), write the outputs and exit with analyze's exit code")
    p.add_argument("--fail-on", choices=SEVERITIES, default="high", help="with --once: exit 1 at or above this")
    p.add_argument("--quiet", "-q", action="store_true", help="no line per file on stderr")


def _listen(text: str) -> tuple[str, int]:
    from ..errors import CommpathError
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CommpathError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(args) -> int:
    """Run the watch until SIGINT/SIGTERM (or one pass with --once)."""
    from ..errors import CommpathError
    from ._watcher import Options, Watcher
    if args.window <= 0 or args.max_flows < 1 or args.interval <= 0 or args.settle < 0:
        raise CommpathError("--window, --max-flows and --interval must be positive, --settle not negative")
    host, port = _listen(args.listen)
    opts = Options(inputs=[Path(p) for p in args.inputs], out=Path(args.out), inventory=args.inventory,
                   policy=args.policy, ca=args.ca, keylog=args.keylog, probe=args.probe, merge=args.merge,
                   window_seconds=args.window, max_flows=args.max_flows, interval=args.interval,
                   settle=args.settle, state=Path(args.state) if args.state else None, once=args.once,
                   quiet=args.quiet, alert_at=args.alert_at, fail_on=args.fail_on)
    watcher = Watcher(opts)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not args.once:
            try:
                server = watcher.metrics.serve(host, port)
            except OSError as exc:
                raise CommpathError(f"--listen {args.listen}: {exc.strerror or exc}") from None
            watcher.say(f"metrics on http://{host}:{server.server_port}/metrics")
        watcher.run(stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if args.once and watcher.analysis is not None:
        from ..present.report import exit_code
        return exit_code(watcher.analysis, args.fail_on)
    return 0
