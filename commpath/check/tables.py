"""The tables the check layer returns, declared once: findings and path verdicts (column → dtype)."""

from __future__ import annotations

import pyarrow as pa

#: One evidence entry of a finding (check/evidence.py ``entry``): which source, what it said (``says``
#: repeats it under the spec's name), where to look.
EVIDENCE_ENTRY = pa.struct([(key, pa.string()) for key in ("source", "said", "says", "where")])

#: One row per check × path × connection key (initiator address, responder address, responder
#: port) × capture: the connections that key stands for, with examples an auditor can open.
FINDING_COLUMNS: dict[str, str] = {
    "check": "category",            # check id (cfg/checks.yaml)
    "severity": "category",         # info | low | medium | high | critical (after the policy)
    "path": "category",             # path id (cfg/catalog.yaml)
    "flow_ids": "list<item: int64>[pyarrow]",  # every connection the finding stands for, by first frame
    "message": "string",            # one line: check title, count, connection key, what was seen
    "remediation": "string",        # the flag or setting that fixes it
    "capture": "string",            # capture file of these connections
    "frames": "list<item: int64>[pyarrow]",    # first frame and handshake frames of the example connections
    "display_filter": "string",     # Wireshark filter opening exactly the example connections' packets
    "reference": "string",          # document anchor, control-plane-node-communication.md#...
    "fingerprint": "string",        # stable id of check, path and connection key (no ports/frames/flow ids)
    "count": "int64",               # connections the finding stands for (len(flow_ids))
    # {source: wire|probe|config|decrypted, said, says, where} per source that spoke, the wire's first
    "evidence_sources": "list<item: struct<source: string, said: string, says: string, where: string>>[pyarrow]",
}

#: One row per judged path of the catalog.
PATH_COLUMNS: dict[str, str] = {
    "id": "category",               # path id
    "observed": "bool",             # at least one flow on the path
    "flows": "int64",               # flows on the path
    "verdict": "category",          # pass | fail | warn | not-observed | not-observable | inconclusive
    "needs": "string",              # what would settle a not-observable or inconclusive verdict
    "evidence": "object",           # list[dict]: what each source said about the path (check/evidence.py)
}

#: Every path verdict, from good to bad (the ordered categories of ``paths.verdict``): a pass, then
#: what was not there or not visible, then what needs a look, then warn and fail.
PATH_VERDICTS: tuple[str, ...] = ("pass", "not-observed", "not-observable", "inconclusive", "warn", "fail")

__all__ = ["EVIDENCE_ENTRY", "FINDING_COLUMNS", "PATH_COLUMNS", "PATH_VERDICTS"]
