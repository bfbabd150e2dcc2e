"""The `commpath` command line: parses arguments and hands each command to its layer."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from .errors import CommpathError

#: command -> "module:function" taking the parsed argparse namespace, returning an exit code.
HANDLERS = {
    "capture": "commpath.capture.agent:main",
    "analyze": "commpath._pipeline:analyze_main",
    "report": "commpath._pipeline:report_main",
    "paths": "commpath.classify.catalog:main",
    "flows": "commpath.present.flows_table:main",
    "lab": "commpath.lab.cli:main",
    "inventory": "commpath.classify.discover:main",
}


def _add_analysis_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture file (pcap, pcapng, optionally .gz), folder of captures, or analyze output folder")
    p.add_argument("--inventory", metavar="FILE", help="cluster inventory (YAML)")
    p.add_argument("--policy", metavar="NAME|FILE", default="default", help="policy name or file (default: default)")
    p.add_argument("--ca", metavar="FILE", help="cluster CA bundle (PEM)")
    p.add_argument("--keylog", metavar="FILE", help="TLS key log (NSS SSLKEYLOGFILE format)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commpath", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("capture", help="record traffic on this host's interfaces")
    p.add_argument("--role", choices=["control-plane", "node"], required=True)
    p.add_argument("--host", metavar="NAME")
    p.add_argument("--iface", action="append", metavar="IF", default=[])
    p.add_argument("--filter", metavar="BPF")
    p.add_argument("--inventory", metavar="FILE")
    p.add_argument("--duration", type=float, metavar="SECONDS")
    p.add_argument("--max-size", type=float, metavar="MB")
    p.add_argument("--ring", type=int, metavar="FILES")
    p.add_argument("--engine", choices=["auto", "dumpcap", "tcpdump", "scapy"], default="auto")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("analyze", help="decode, classify and check captures; write the output set")
    _add_analysis_inputs(p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--fail-on", choices=["info", "low", "medium", "high", "critical"], default="high")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="one flow per connection seen from several hosts, with clock offsets "
                        "(default: when the manifests name more than one host)")

    p = sub.add_parser("report", help="write path-compliance reports")
    _add_analysis_inputs(p)
    p.add_argument("--format", action="append", choices=["html", "md", "json", "junit"], default=[])
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--fail-on", choices=["info", "low", "medium", "high", "critical"], default="high")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="one flow per connection seen from several hosts (default: when the manifests "
                        "name more than one host)")

    p = sub.add_parser("paths", help="print the path catalog with its document references")
    p.add_argument("--format", choices=["text", "yaml", "json"], default="text")

    p = sub.add_parser("flows", help="print the connection table of captures")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--limit", type=int, default=0, help="rows to print (0: all)")
    p.add_argument("--quiet", "-q", action="store_true")

    p = sub.add_parser("lab", help="the emulated cluster")
    p.add_argument("action", choices=["up", "exercise", "capture", "down", "run"])
    p.add_argument("--scenario", default="default")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--name", default="cplab", help="prefix of the lab's namespaces")

    p = sub.add_parser("inventory", help="cluster inventory tools")
    isub = p.add_subparsers(dest="inventory_command", required=True)
    d = isub.add_parser("discover", help="write an inventory from a live cluster")
    d.add_argument("--kubeconfig", metavar="FILE")
    d.add_argument("--context", metavar="NAME")
    d.add_argument("-o", "--output", metavar="FILE", default="-")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = HANDLERS[args.command].split(":")
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

    The collector's objects are frozen first: the interpreter's teardown would otherwise walk
    every object still alive once more (pandas, pyarrow and cryptography included), about 0.1 s
    of every command. Calls of :func:`main` inside a running interpreter are left alone."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
