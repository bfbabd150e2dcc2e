"""The per-direction payload limit (``read(payload_limit=)``, ``--payload-limit``): default, bounds, parsing."""

from __future__ import annotations

import operator
import re

#: Bytes ``read`` keeps from the start of each direction of each TCP connection (``commpath flows``).
PAYLOAD_LIMIT = 16384
#: Bytes the handshake parsers of ``open``, ``analyze`` and ``report`` read of each direction, streaming
#: (nothing kept): a ClientHello padded past 16 KiB, or a certificate chain longer than that, is read
#: whole. Chosen by benchmarks/payload_limit.py (benchmarks/RESULTS.md): a million connections cost the
#: same time and memory as with 16 KiB, because the stream arena's memory is a fixed budget and a slot
#: is cleared only as far as its previous connection wrote.
ANALYSIS_PAYLOAD_LIMIT = 256 * 1024
#: The bounds a payload limit must lie in: room to tell the protocol from the first bytes, and slots
#: the stream arena can hold at least 64 of within a bounded memory (64 slots of 1 MiB: 72 MiB with
#: their coverage bits), whatever its budget.
MIN_PAYLOAD_LIMIT, MAX_PAYLOAD_LIMIT = 64, 1 << 20

_SIZE = re.compile(r"^\s*(\d+)\s*(k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)


def check_payload_limit(limit) -> int:
    """``limit`` as an int when it is a whole number within the bounds; ValueError saying them if not."""
    try:
        value = operator.index(limit) if not isinstance(limit, bool) else None
    except TypeError:
        value = None
    if value is None or not MIN_PAYLOAD_LIMIT <= value <= MAX_PAYLOAD_LIMIT:
        raise ValueError(f"payload limit must be a whole number of bytes from {MIN_PAYLOAD_LIMIT} to "
                         f"{MAX_PAYLOAD_LIMIT} (1 MiB), got {limit!r}")
    return value


def parse_payload_limit(text: str) -> int:
    """A command-line size: bytes, or with a K/KiB or M/MiB suffix (powers of 1024), within the bounds."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"payload limit {text!r} is not a size (bytes, or with a K or M suffix: 64K, 1M)")
    unit = (m.group(2) or "").lower()[:1]
    return check_payload_limit(int(m.group(1)) << {"": 0, "k": 10, "m": 20}[unit])


__all__ = ["ANALYSIS_PAYLOAD_LIMIT", "MAX_PAYLOAD_LIMIT", "MIN_PAYLOAD_LIMIT", "PAYLOAD_LIMIT", "check_payload_limit", "parse_payload_limit"]
