"""Handshake analysis of a capture: TLS connections, certificates, SSH and plaintext HTTP as DataFrames."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

import numpy as np

from . import _hs_fast
from ._cert_book import CertBook, x509_module
from ._hs_columns import part_tables, run_tables
from ._hs_tables import frame_from_rows
from ._tls13_decrypt import decrypt_handshake, keylog_module
from .engine import collector_paused
from .http import http1_rows, parse_http
from ._run_chains import MAX_INCOMPLETE, complete_from_run, verify_sides
from ._sessions import resolve, session_keys
from .schema import HTTP_COLUMNS, SSH_COLUMNS, TLS_COLUMNS, TLS_EXTRA
from .ssh import parse_ssh
from .streams import FlowStreams
from .tls import TlsHandshake, find_starttls, looks_like_tls, parse_tls

if TYPE_CHECKING:          # pandas loads when the tables are built (inside read()'s collector pause)
    import pandas as pd

HANDSHAKE_PROTOCOLS = ("tls", "ssh", "http", "http2")


@dataclass
class Handshakes:
    """Per-connection handshake facts: ``tls``, ``certs``, ``ssh`` and ``http`` DataFrames."""

    tls: pd.DataFrame
    certs: pd.DataFrame
    ssh: pd.DataFrame
    http: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


class HandshakeAnalyzer:
    """Parses each connection's handshakes as its streams arrive; keeps only the parsed rows.

    Feed it from the engine (``commpath.read(..., keep_streams=False, on_streams=a)``) so
    memory does not grow with the capture, then take :meth:`result`. Given as the sink itself
    (not ``a.feed``), it also takes TLS connections in batches where the engine holds their
    bytes (:meth:`tls_batch`): the same rows, with no copy per connection.
    """

    def __init__(self, ca=None, keylog=None):
        self.cas = x509_module().load_ca_bundle(ca) if ca else None
        self.keys = keylog_module().load_keylog(keylog) if keylog else None
        self.max_appdata = 32 if self.keys is not None else 4
        self.tls_rows: list[dict] = []
        self.ssh_rows: list[dict] = []
        self.http_rows: list[dict] = []
        self.certs = CertBook()
        #: TLS connections waiting for the C walker (None: each is parsed in Python when fed)
        self._pending: list[tuple] | None = [] if self.keys is None and _hs_fast.walker() is not None else None
        #: captures' :meth:`unresolved_tables` absorbed, with their flow-id bases
        self._tables: list[tuple[dict, int]] = []

    def feed(self, fs: FlowStreams, proto: str | None = None, ts=None, dst_ip=None) -> None:
        """Analyse one connection; protocol, start time and responder default to the stream's own."""
        proto = proto or fs.app_protocol
        ts = fs.ts_start if ts is None else ts
        dst_ip = fs.dst_ip if dst_ip is None else dst_ip
        pending = self._pending
        if (proto == "tls" or proto == "unknown") and not looks_like_tls(fs.fwd.data):
            found = find_starttls(fs) if fs.fwd.data else None    # upgraded in band (STARTTLS)
            if found is not None:
                self._tls(found[0], ts, dst_ip, False, found[1])
                return
            if proto == "unknown":
                return
        if pending is not None and (proto == "tls" or proto == "http"):
            # the common cases wait in feed order, for the C walk and for a run of HTTP parses
            pending.append((fs, ts, dst_ip, False, None) if proto == "tls" else (fs, ts, dst_ip))
            if len(pending) >= _hs_fast.BATCH:
                self._flush()
            return
        if proto not in HANDSHAKE_PROTOCOLS and proto != "unknown":
            return
        if proto == "tls" or (proto not in ("ssh", "http", "http2") and looks_like_tls(fs.fwd.data)):
            self._tls(fs, ts, dst_ip, False)
        elif proto == "ssh":
            self.ssh_rows.append(_SSH_ROW(parse_ssh(fs)))
        elif proto in ("http", "http2"):
            tunnel = self._http(fs, proto, ts, dst_ip)
            if tunnel is not None:
                self._tls(*tunnel)

    def _http(self, fs: FlowStreams, proto: str, ts, dst_ip) -> tuple | None:
        """HTTP rows of one connection; returns the TLS job of a CONNECT tunnel that carries TLS, if any."""
        rows = self.http_rows
        plain = http1_rows(fs) if proto == "http" else None
        if plain is not None:                           # plain HTTP/1: rows straight from the parsed heads
            rows += plain
            return None
        res = parse_http(fs, h2=(proto == "http2"))
        tail = (res.partial, res.parse_error)           # the parser's rows never carry these two
        for row in res.rows:
            rows.append(tuple(map(row.get, _HTTP_HEAD)) + tail)
        if res.tunnel is not None and looks_like_tls(res.tunnel.fwd.data):
            return res.tunnel, ts, _connect_host(res.rows) or dst_ip, True, None
        if res.tunnel is not None and res.tunnel.fwd.data[:1].isalpha():
            inner = parse_http(res.tunnel)                # plain HTTP through the tunnel
            for row in inner.rows:
                row.update(tunneled=True, partial=inner.partial, parse_error=inner.parse_error)
                rows.append(tuple(map(row.get, _HTTP_NAMES)))
        return None

    def _tls(self, fs: FlowStreams, ts, dst_ip, tunneled: bool, starttls_from: str | None = None) -> None:
        """One TLS connection (``starttls_from``: the clear-text protocol it was upgraded from, if any):
        queued for the C walker, or parsed here and now."""
        pending = self._pending
        if pending is None:
            self.tls_rows.append(_tls_row(parse_tls(fs, self.max_appdata), ts, dst_ip, self.cas, self.keys,
                                          self.certs, tunneled, starttls_from))
            return
        pending.append((fs, ts, dst_ip, tunneled, starttls_from))
        if len(pending) >= _hs_fast.BATCH:
            self._flush()

    def _flush(self) -> None:
        """The queued connections, in feed order: HTTP parsed, TLS from the C walk (the unusual ones in Python)."""
        jobs = self._pending
        if not jobs:
            return
        self._pending = []
        tls_jobs = []
        http = self._http
        for job in jobs:
            if len(job) == 5:
                tls_jobs.append(job)
            else:
                tunnel = http(job[0], "http", job[1], job[2])
                if tunnel is not None:
                    tls_jobs.append(tunnel)
        if tls_jobs:
            self.tls_rows += _hs_fast.rows(tls_jobs, self.max_appdata, self._cert_columns, self._careful)

    def tls_batch(self, batch) -> None:
        """TLS connections as a StreamBatch: walked in C where the engine holds their bytes (see engine.read)."""
        if self._pending is None:                     # a key log, or no walker: one at a time
            for k in range(batch.n):
                self.feed(batch.flow_streams(k))
            return
        careful = self._careful

        def careful_at(k: int) -> tuple:
            return careful((batch.flow_streams(k), batch.ts[k], batch.dst_ips[k], False, None))

        self.tls_rows += _hs_fast.batch_rows(batch, self.max_appdata, self._cert_columns, careful_at,
                                             needs_dst=self.cas is not None)

    __call__ = feed      # the analyzer itself is an on_streams sink (one with the tls_batch door)

    def _cert_columns(self, flow_id, sni, server_chain, client_chain, ts, dst_ip, tunneled) -> tuple:
        if self.cas is None and not server_chain and not client_chain:
            return [], [], None, None, None, []
        return _cert_columns(flow_id, sni, server_chain, client_chain, ts, dst_ip, self.cas, self.certs, tunneled)

    def _careful(self, job: tuple) -> tuple:
        """The row of a TLS job = (streams, ts, dst_ip, tunneled, starttls_from) by the careful parser."""
        fs, ts, dst_ip, tunneled, starttls_from = job
        return _tls_row(parse_tls(fs, self.max_appdata), ts, dst_ip, self.cas, self.keys, self.certs, tunneled,
                        starttls_from)

    def result(self) -> Handshakes:
        """The tables of every connection fed so far (the collector paused while they are built)."""
        with collector_paused():
            return self._result()

    def unresolved(self) -> dict:
        """Every row fed so far before the run-level steps of :meth:`result` (session resumption, chains
        completed from the run), with the certificates seen: what :meth:`absorb` takes, so the captures
        of one run may be analysed apart (``commpath.distributed``) and resolved together."""
        if self._pending:
            self._flush()
        book = self.certs
        return {"tls": self.tls_rows, "ssh": self.ssh_rows, "http": self.http_rows, "incomplete": book.incomplete,
                "certs": [(book._ders[fp], book._roles[fp], list(book._flows[fp])) for fp in book._ders]}

    def unresolved_tables(self) -> dict:
        """:meth:`unresolved` with its TLS, SSH and HTTP rows as typed tables (``_hs_columns.part_tables``):
        cheaper to send to another process, and taken by :meth:`absorb` alike."""
        part = self.unresolved()
        return {**part, **part_tables(part["tls"], part["ssh"], part["http"], _ROW_COLUMNS)}

    def result_of_tables(self, tables: dict) -> Handshakes:
        """:meth:`result`, from this analyzer's own :meth:`unresolved_tables` (``tables``): the rows are
        typed once, not again. ``tables`` is left as it was (it may still be sent elsewhere)."""
        if self._tables:
            raise ValueError("result_of_tables is for an analyzer fed its own connections")
        own = {**tables, **{k: tables[k].copy(deep=False) for k in ("tls", "ssh", "http")}}
        with collector_paused():
            return self._of_tables([(own, 0)])

    def _of_tables(self, parts: list[tuple[dict, int]]) -> Handshakes:
        """The tables of typed parts (each with its flow-id base), resolved over all of them."""
        tls, ssh, http = run_tables(parts, self.certs, self.cas, _TLS_ALL, _ROW_COLUMNS)
        warnings = self._key_warnings(int((tls["certs_visibility"] == "decrypted").sum()),
                                      int((tls["tls_version"] == "TLS 1.3").sum()))
        return Handshakes(tls=tls, certs=self.certs.frame(), ssh=ssh, http=http, warnings=warnings)

    def absorb(self, part: dict, flow_base: int = 0) -> None:
        """Add :meth:`unresolved` (or :meth:`unresolved_tables`) of the next capture of the run, its flow
        ids moved on by ``flow_base``: :meth:`result` is then what one analyzer fed every capture in
        turn gives. One analyzer absorbs one of the two kinds, and is not fed rows of its own."""
        book = self.certs
        if isinstance(part["tls"], list):
            self._absorb_rows(part, flow_base)
        else:
            self._tables.append((part, flow_base))
        for der, roles, flows in part["certs"]:
            for role in roles:
                book.add(der, flows[0] + flow_base, role)
            for flow in flows[1:]:
                book.add(der, flow + flow_base, roles[0])
        room = MAX_INCOMPLETE - len(book.incomplete)
        book.incomplete += [(f + flow_base,) + tuple(rest) for f, *rest in part["incomplete"][:max(room, 0)]]

    def _absorb_rows(self, part: dict, flow_base: int) -> None:
        def moved(rows):
            return [(row[0] + flow_base,) + tuple(row[1:]) for row in rows]
        self.tls_rows += moved(part["tls"])
        self.ssh_rows += moved(part["ssh"])
        self.http_rows += moved(part["http"])

    def _result(self) -> Handshakes:
        if self._pending:
            self._flush()
        if self._tables:
            if self.tls_rows or self.ssh_rows or self.http_rows:
                raise ValueError("a HandshakeAnalyzer absorbs tables or rows, not both")
            return self._of_tables(self._tables)
        warnings: list[str] = []
        if self.keys is not None:
            vis, ver = _TLS_NAMES.index("certs_visibility"), _TLS_NAMES.index("tls_version")
            warnings = self._key_warnings(sum(1 for r in self.tls_rows if r[vis] == "decrypted"),
                                          sum(1 for r in self.tls_rows if r[ver] == "TLS 1.3"))
        by_flow = itemgetter(0)                       # flow_id is the first column of each table
        rows = resolve(self.tls_rows, 0, _TLS_NAMES.index("client_cert"))     # resumed sessions inherit
        rows = complete_from_run(rows, self.certs, self.cas, _TLS_NAMES)        # and chains the run completes
        tls = frame_from_rows(sorted(rows, key=by_flow), _TLS_ALL)
        ssh = frame_from_rows(sorted(self.ssh_rows, key=by_flow), SSH_COLUMNS)
        http = frame_from_rows(sorted(self.http_rows, key=by_flow), HTTP_COLUMNS)   # stable: parse order kept
        return Handshakes(tls=tls, certs=self.certs.frame(), ssh=ssh, http=http, warnings=warnings)

    def _key_warnings(self, n_dec: int, n13: int) -> list[str]:
        """With a key log: a warning when none of the ``n13`` TLS 1.3 connections was decrypted."""
        if self.keys is not None and n13 and not n_dec:
            return [f"key log: none of the {n13} TLS 1.3 connections matched a logged client random"]
        return []


def analyze_handshakes(capture, ca=None, keylog=None) -> Handshakes:
    """Parse the handshakes of the TLS, SSH and HTTP connections of ``capture`` (its kept streams).

    ``ca``: path of a PEM bundle to verify certificates against (None: not verified).
    ``keylog``: path of an NSS key log that reveals TLS 1.3 certificates.
    """
    analyzer = HandshakeAnalyzer(ca, keylog)
    flows = capture.flows
    if len(flows):
        apps = flows["app_protocol"].astype(str)
        wanted = (apps.isin(HANDSHAKE_PROTOCOLS + ("unknown",)) | flows["http_connect"].astype(bool)).to_numpy()
        sel = zip(flows["flow_id"].to_numpy()[wanted].tolist(),
                  apps.to_numpy()[wanted].tolist(),
                  flows["ts_start"].to_numpy()[wanted].tolist(),
                  flows["dst_ip"].astype(object).to_numpy()[wanted].tolist())
        for flow_id, proto, ts, dst_ip in sel:
            fs = capture.streams.get(flow_id)
            if fs is not None:
                analyzer.feed(fs, proto, ts, dst_ip)
    return analyzer.result()


def _connect_host(rows: list[dict]) -> str | None:
    for r in rows:
        if r.get("connect_target"):
            host = r["connect_target"].rsplit(":", 1)[0].strip("[]")
            return host
    return None


# --------------------------------------------------------------------------- TLS rows

_TLS_ALL = {**TLS_COLUMNS, **TLS_EXTRA}
_TLS_NAMES = list(_TLS_ALL)
#: Filled once every connection is in (_sessions.resolve); rows carry the session material instead.
_RESOLVED = ("client_cert_source", "resumed_from", "chain_from_run")
_ROW_NAMES = [k for k in _TLS_NAMES if k not in _RESOLVED]
_ROW_COLUMNS = {k: _TLS_ALL[k] for k in _ROW_NAMES}
#: TLS columns read straight off the handshake record, then the ones _tls_row computes.
_HS_ATTRS = [k for k in _ROW_NAMES if k in TlsHandshake.__slots__ and k not in TLS_EXTRA]
_ROW_EXTRA = ["server_cert_fingerprints", "client_cert_fingerprints", "server_cert_verified",
              "client_cert_verified", "verify_error", "verify_reasons", "client_cert_inference", "tunneled", "starttls",
              "starttls_from", "ja3", "ja3s", "ja4s", "kex_group", "ech"]
_HS_GET = attrgetter(*_HS_ATTRS)
_TLS_ORDER = itemgetter(*[(_HS_ATTRS + _ROW_EXTRA).index(k) for k in _ROW_NAMES])
assert sorted(_HS_ATTRS + _ROW_EXTRA) == sorted(_ROW_NAMES), "every TLS column has a source"
assert _TLS_NAMES[-3:] == list(_RESOLVED)
assert _ROW_NAMES == [
    "flow_id", "tls_version", "client_versions", "sni", "alpn_offered", "alpn", "cipher", "cipher_id", "ja4",
    "hello_retry", "resumed", "established", "cert_request", "cert_request_cas", "server_cert_fingerprints",
    "client_cert_fingerprints", "certs_visibility", "client_cert", "server_cert_verified", "client_cert_verified",
    "verify_error", "alerts", "partial", "parse_error", "handshake_frames", "client_cert_inference", "tunneled",
    "starttls", "starttls_from", "verify_reasons", "ja3", "ja3s", "ja4s", "kex_group", "ech"], \
    "HandshakeAnalyzer._flush builds TLS rows in this order (then the session material)"
_HTTP_NAMES = list(HTTP_COLUMNS)
_HTTP_HEAD = _HTTP_NAMES[:-2]
assert _HTTP_NAMES[-2:] == ["partial", "parse_error"]
_SSH_ROW = attrgetter(*SSH_COLUMNS)


def _tls_row(hs: TlsHandshake, ts, dst_ip, cas, keys, certs: "CertBook", tunneled: bool,
             starttls_from: str | None = None) -> tuple:
    """One row of the ``tls`` table, as a tuple in column order."""
    if keys is not None and hs.tls_version == "TLS 1.3" and hs.client_random in keys:
        decrypt_handshake(hs, keys[hs.client_random])
    certificates = _cert_columns(hs.flow_id, hs.sni, hs.server_chain, hs.client_chain, ts, dst_ip, cas, certs,
                                 tunneled)
    session = session_keys(hs.resumed, ts, *hs.session) if hs.session is not None else None
    return _TLS_ORDER(_HS_GET(hs) + certificates + (hs.inference, tunneled, starttls_from is not None, starttls_from,
                                                    hs.ja3, hs.ja3s, hs.ja4s, hs.kex_group, hs.ech)) + (session,)


def _cert_columns(flow_id: int, sni, server_chain: list[bytes], client_chain: list[bytes], ts, dst_ip, cas,
                  certs: "CertBook", tunneled: bool) -> tuple:
    """Certificates into the book; (server fingerprints, client fingerprints, verified, verified, error,
    reasons)."""
    s_fps = certs.chain(server_chain, flow_id, "server")
    c_fps = certs.chain(client_chain, flow_id, "client")
    s_ok = c_ok = verify_error = None
    reasons: list[str] = []
    if cas is not None and not np.isfinite(ts):
        # pcapng simple packet blocks carry no time: validity at capture time cannot be judged
        verify_error = "no capture time for this connection: certificates not verified"
    elif cas is not None:
        server, client = [certs.parsed(fp) for fp in s_fps], [certs.parsed(fp) for fp in c_fps]
        at = dt.datetime.fromtimestamp(float(ts), dt.timezone.utc)
        ip = None if tunneled and not _is_ip(dst_ip) else dst_ip
        name = sni or (dst_ip if tunneled and not _is_ip(dst_ip) else None)
        s_ok, c_ok, verify_error, reasons = verify_sides(server, client, cas, at, name, ip)
        if any(r.endswith(":missing-intermediate") for r in reasons) and len(certs.incomplete) < MAX_INCOMPLETE:
            certs.incomplete.append((int(flow_id), tuple(s_fps), tuple(c_fps), at, name, ip))
    return list(s_fps), list(c_fps), s_ok, c_ok, verify_error, reasons


def _is_ip(text) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(str(text))
        return True
    except ValueError:
        return False
