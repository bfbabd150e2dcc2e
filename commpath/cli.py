"""The `commpath` command line: parses arguments and hands each command to its layer."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from . import cluster_cli
from ._process import own_process
from ._version import __version__
from .decode.limits import ANALYSIS_PAYLOAD_LIMIT, PAYLOAD_LIMIT, parse_payload_limit
from .errors import CommpathError
from .present import config_table
from .watch.cli import register as register_watch

SEVERITIES = ["info", "low", "medium", "high", "critical"]
#: `report --format` choices: the human reports, then the machine exports.
REPORT_FORMATS = ["html", "md", "json", "junit", "sarif", "zeek", "csv"]


#: What `commpath --help` says before the command list.
DESCRIPTION = """\
Prove from packet captures how a Kubernetes control plane and its nodes communicate.

commpath decodes captures (pcap/pcapng, folders of them, or an earlier analyze output),
classifies every connection into the documented paths of "Communication between Nodes and
the Control Plane" and judges each path: pass, fail, warn, not-observed, not-observable or
inconclusive, with the capture, frames, a Wireshark filter and the fixing flag as evidence."""

EPILOG = """\
exit codes: 0 done, nothing at or above --fail-on; 1 findings at or above --fail-on;
2 bad usage or unreadable input (one line on stderr naming the file and the reason);
3 (analyze, report) nothing at or above --fail-on, but the run is inconclusive: the evidence
given (no inventory, certificates not observable ...) cannot support a pass.
Run `commpath COMMAND --help` for the options of a command."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends each option's default to its help (when it
    has a meaningful one that the help text does not already state)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default in (None, False, [], argparse.SUPPRESS) or "(default" in text or "(None:" in text
                or "([]:" in text or action.option_strings == [] or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: %(default)s)"

#: command -> "module:function" taking the parsed argparse namespace, returning an exit code.
HANDLERS = {
    "capture": "commpath.capture.agent:main",
    "analyze": "commpath._commands:analyze_main",
    "report": "commpath._commands:report_main",
    "diff": "commpath.present.diff:main",
    "paths": "commpath.classify.catalog:main",
    "flows": "commpath.present.flows_table:main",
    "lab": "commpath.lab.cli:main",
    "inventory": "commpath.classify.discover:main",
    "watch": "commpath.watch.cli:main",
    "cluster": "commpath.cluster_cli:main",
    "config": "commpath.present.config_table:main",
    "probe": "commpath.probe_cli:main",
}


def _add_analysis_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture file (pcap, pcapng, optionally .gz), folder of captures, or analyze output folder")
    p.add_argument("--inventory", metavar="FILE",
                   help="cluster inventory (YAML); without one, roles are inferred from ports and handshakes "
                        "and the run can at best be inconclusive")
    p.add_argument("--policy", metavar="NAME|FILE", default="default",
                   help="policy name (built-in: default, untrusted-network) or a policy YAML file")
    p.add_argument("--ca", metavar="FILE",
                   help="cluster CA bundle (PEM) to verify serving certificates (default: the inventory's ca_bundle)")
    p.add_argument("--keylog", metavar="FILE",
                   help="TLS key log (NSS SSLKEYLOGFILE format) to read TLS 1.3 certificates")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary on stderr")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run on a local dask.distributed cluster of N worker processes, one decode task per "
                        "capture (default: several large local captures are decoded on every core by Dask's local "
                        "process scheduler, the rest runs in this process; 0: all in this process; inputs given "
                        "as URLs use a local cluster of every core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="decode on an existing dask.distributed cluster, e.g. tcp://HOST:8786")
    p.add_argument("--parts", metavar="DIR|URL",
                   help="where Dask tasks write each capture's tables as Parquet, partitioned by host (a folder "
                        "or URL every worker can write; default: DIR/parts of analyze --out, else temporary)")
    p.add_argument("--fail-on", choices=SEVERITIES, default="high",
                   help="exit 1 when a finding is at or above this severity")
    p.add_argument("--probe", metavar="DIR",
                   help="the --out folder of commpath probe: its findings settle what the wire cannot show")
    p.add_argument("--host-config", nargs="+", action="extend", metavar="DIR",
                   help="host configuration folders (as commpath config reads them); the capture agents' "
                        "manifests add theirs")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="one flow per connection seen from several hosts, with clock offsets "
                        "(None: merge when the manifests name more than one host)")
    _add_payload_limit(p, ANALYSIS_PAYLOAD_LIMIT)


def _payload_limit(text: str) -> int:
    try:
        return parse_payload_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_payload_limit(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--payload-limit", type=_payload_limit, default=default, metavar="BYTES",
                   help="bytes of each direction of each TCP connection the handshake parsers read (K or M "
                        "suffix: 64K, 1M; at most 1M); a handshake longer than this is marked partial with the reason")


def _sub(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commpath", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"commpath {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "capture", "record traffic on this host's interfaces")
    p.add_argument("--role", choices=["control-plane", "node"], required=True,
                   help="what this host is in the cluster (written to the manifest)")
    p.add_argument("--host", metavar="NAME", help="host name for the manifest (default: this machine's name)")
    p.add_argument("--iface", action="append", metavar="IF", default=[],
                   help="interface to record; repeat for several ([]: the engine's default, 'any' on Linux)")
    p.add_argument("--filter", metavar="BPF",
                   help="capture filter (default: the control-plane ports of the inventory, or of the catalog)")
    p.add_argument("--inventory", metavar="FILE", help="cluster inventory (YAML) that narrows the capture filter")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds (None: until interrupted)")
    p.add_argument("--max-size", type=float, metavar="MB", help="rotate each file at this size in MB")
    p.add_argument("--ring", type=int, metavar="FILES", help="keep only the newest FILES files when rotating")
    p.add_argument("--engine", choices=["auto", "dumpcap", "tcpdump", "scapy"], default="auto",
                   help="capture engine (auto: dumpcap, then tcpdump, then scapy)")
    p.add_argument("--buffer-mb", type=int, metavar="MB", help="kernel capture buffer per interface (default 8)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the capture files and manifest.json")

    p = _sub(sub, "analyze", "decode, classify and check captures; write the output set")
    _add_analysis_inputs(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for flows/tls/certs/findings .parquet and report.json")

    p = _sub(sub, "report", "write path-compliance reports and standard exports")
    _add_analysis_inputs(p)
    p.add_argument("--format", action="append", choices=REPORT_FORMATS, default=[],
                   help="html, md, json, junit (.xml), sarif (SARIF 2.1.0), zeek (folder of Zeek-style JSON logs) "
                        "or csv (folder, one file per table); repeat for several ([]: implied by -o's extension, "
                        "else html)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="base name of the reports; each format's extension is added (report -> report.html, "
                        "report.md ...) unless FILE already ends with it")
    p.add_argument("--suppress", metavar="FILE",
                   help="suppressions (YAML): findings by fingerprint or check+path, with a reason and an expiry "
                        "date; suppressed findings are kept and marked, and do not count for --fail-on")

    p = _sub(sub, "diff", "compare two runs: new, fixed and unchanged findings; path verdict changes")
    p.add_argument("old", metavar="OLD", help="the baseline: an analyze output folder or its report.json")
    p.add_argument("new", metavar="NEW", help="the run to compare: an analyze output folder or its report.json")
    p.add_argument("--format", choices=["text", "json", "md"], default="text", help="output format")
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="where to write the comparison (-: stdout)")
    p.add_argument("--fail-on", choices=SEVERITIES, default="high",
                   help="exit 1 when a new finding is at or above this severity")
    p.add_argument("--suppress", metavar="FILE", help="suppressions (YAML) applied to NEW's findings")

    p = _sub(sub, "paths", "print the path catalog with its document references")
    p.add_argument("--format", choices=["text", "yaml", "json"], default="text", help="output format")

    p = _sub(sub, "flows", "print the connection table of captures")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="capture file or folder of captures")
    p.add_argument("--limit", type=int, default=0, help="rows to print (0: all)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    _add_payload_limit(p, PAYLOAD_LIMIT)

    p = _sub(sub, "lab", "the emulated cluster in network namespaces (root)")
    p.add_argument("action", choices=["up", "exercise", "capture", "down", "run"],
                   help="up, exercise, capture and down one by one, or run them all")
    p.add_argument("--scenario", default="default", help="lab scenario name")
    p.add_argument("--out", metavar="DIR", help="folder for the recorded captures, inventory and PKI")
    p.add_argument("--name", default="cplab", help="prefix of the lab's namespaces")
    p.add_argument("--kind", choices=["emulated", "real"], default="emulated",
                   help="emulated peers, or real Kubernetes components built from upstream (slow first build)")
    p.add_argument("--probe", metavar="DIR", help="run (--kind real): also `commpath probe` the cluster into DIR")

    p = _sub(sub, "inventory", "cluster inventory tools")
    isub = p.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    d = isub.add_parser("discover", help="write an inventory from a live cluster",
                        description="write an inventory from a live cluster", formatter_class=_HelpFormatter)
    d.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (None: $KUBECONFIG or ~/.kube/config)")
    d.add_argument("--context", metavar="NAME", help="kubeconfig context (None: the current one)")
    d.add_argument("-o", "--output", metavar="FILE", default="-", help="where to write the inventory (-: stdout)")
    register_watch(sub, _HelpFormatter)
    cluster_cli.register(sub)
    config_table.register(sub)
    from .probe_cli import register as register_probe
    register_probe(sub, _HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the process's own command line, when a large capture of
    `analyze` or `report` starts decoding in a forked process before the command's imports,
    ``commpath._ahead``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = HANDLERS[args.command].split(":")
    if argv is None and args.command in ("analyze", "report") and args.workers is None and args.scheduler is None:
        from . import _ahead
        _ahead.start(args.inputs, args.inventory, args.ca, args.keylog,
                     getattr(args, "payload_limit", ANALYSIS_PAYLOAD_LIMIT))
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except CommpathError as exc:
        print(f"commpath: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("commpath: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """The process entry point (the `commpath` command, ``python -m commpath``): :func:`main`, then exit.

    The whole command runs the garbage collector less often (:func:`commpath._process.collect_less`),
    not only :func:`commpath.open`. At the exit, the collector's objects are frozen: the interpreter's
    teardown would otherwise walk every object still alive once more (pandas, pyarrow and
    cryptography included), about 0.1 s of every command. Calls of :func:`main` inside a running
    interpreter are left alone: their allocator (:func:`commpath._process.unmap_large_blocks`) and, beyond
    :func:`commpath.open`'s run, their collector."""
    own_process()
    code = main()
    # CPython marks a KeyboardInterrupt that ends a string ``exec`` (dataclasses and namedtuple build
    # their methods that way) as unhandled even when it is caught later; under ``python -m`` the
    # process then kills itself with SIGINT at exit, whatever main() returned (status -2 instead of
    # 130). Every string exec clears the mark first, so one more clears a Ctrl-C's leftover.
    exec("None")
    if code == 130:
        # interrupted and cleaned up: a further Ctrl-C while the interpreter winds down changes nothing
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
