"""The certificates of a run by fingerprint, with the connections and roles they were seen in."""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING

from ._hs_tables import frame_from_rows
from .schema import CERT_COLUMNS, empty_frame

if TYPE_CHECKING:
    import pandas as pd

    from .x509 import ParsedCert


def x509_module():
    """The certificate module (and with it cryptography), loaded when a certificate is parsed or verified."""
    from . import x509
    return x509


class CertBook:
    """Certificates by fingerprint, with the flows and roles they were seen in; each parsed once, when
    its fields are first needed (verification, or the table)."""

    def __init__(self):
        self._by_der: dict[bytes, str] = {}           # DER -> fingerprint
        self._ders: dict[str, bytes] = {}             # fingerprint -> DER, in the order first seen
        self._parsed: dict[str, ParsedCert] = {}
        self._roles: dict[str, list[str]] = {}
        self._flows: dict[str, dict[int, None]] = {}      # insertion-ordered set
        #: (chain, leaf role) -> its fingerprints: servers send the same chain on every connection
        self._chains: dict[tuple, list[str]] = {}
        #: connections whose chain lacked an intermediate (see _run_chains.complete_from_run)
        self.incomplete: list[tuple] = []

    def chain(self, ders: list[bytes], flow_id: int, leaf: str) -> list[str]:
        """:meth:`add` for each certificate of a chain (the first as ``leaf``, the rest intermediates)."""
        if not ders:
            return []
        key = (tuple(ders), leaf)
        known = self._chains.get(key)
        if known is None:
            known = [self.add(der, flow_id, leaf if i == 0 else "intermediate") for i, der in enumerate(ders)]
            if len(self._chains) < 256:          # bounded: the chains keep their DER bytes alive
                self._chains[key] = known
            return known
        flow_id = int(flow_id)
        flows = self._flows
        for fp in known:                              # roles are in place since the first time
            flows[fp][flow_id] = None
        return known

    def add(self, der: bytes, flow_id: int, role: str) -> str:
        """Note that ``der`` was seen in ``flow_id`` as ``role``; returns its fingerprint."""
        fp = self._by_der.get(der)
        if fp is None:
            fp = sha256(der).hexdigest()              # x509.fingerprint
            if fp not in self._ders:
                self._ders[fp] = der
                self._roles[fp], self._flows[fp] = [], {}
            if len(self._by_der) < 100_000:
                self._by_der[der] = fp
        if role not in self._roles[fp]:
            self._roles[fp].append(role)
        self._flows[fp][int(flow_id)] = None
        return fp

    def intermediates(self) -> list[ParsedCert]:
        """Every certificate presented as an intermediate in the run (parsed), in the order first seen."""
        return [self.parsed(fp) for fp, roles in self._roles.items() if "intermediate" in roles]

    def parsed(self, fp: str) -> ParsedCert:
        """The certificate of fingerprint ``fp``, parsed (once)."""
        pc = self._parsed.get(fp)
        if pc is None:
            pc = self._parsed[fp] = x509_module().parse_certificate(self._ders[fp])
        return pc

    def frame(self) -> pd.DataFrame:
        if not self._ders:
            return empty_frame(CERT_COLUMNS)
        rows = []
        # by the first connection each was seen in (then as added): the same order however the engine
        # batched the connections
        for fp in sorted(self._ders, key=lambda f: min(self._flows[f])):
            pc = self.parsed(fp)
            row = {k: pc.row.get(k) for k in CERT_COLUMNS}
            row["roles"] = self._roles[fp]
            row["flow_ids"] = sorted(self._flows[fp])
            for k in ("sans", "key_usage", "extended_key_usage", "warnings"):
                row[k] = row[k] if row[k] is not None else []
            rows.append(tuple(map(row.get, CERT_COLUMNS)))
        return frame_from_rows(rows, CERT_COLUMNS)            # not_before/not_after: UTC datetimes, typed at once
