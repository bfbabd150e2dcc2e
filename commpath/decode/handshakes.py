"""Handshake analysis of a capture: TLS connections, certificates, SSH and plaintext HTTP as DataFrames."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from hashlib import sha256
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

import numpy as np

from . import _hs_fast
from .engine import collector_paused
from ._tls_wire import EXT_ALPN, HS_CERTIFICATE, HS_CERTIFICATE_REQUEST, HS_ENCRYPTED_EXTENSIONS, Reader, Truncated
from .http import http1_rows, parse_http
from ._run_chains import MAX_INCOMPLETE, complete_from_run, verify_sides
from ._sessions import resolve, session_keys
from .schema import CERT_COLUMNS, HTTP_COLUMNS, SSH_COLUMNS, TLS_COLUMNS, TLS_EXTRA, conform, empty_frame
from .ssh import parse_ssh
from .streams import FlowStreams
from .tls import (
    TlsHandshake, find_starttls, looks_like_tls, parse_certificate_list, parse_certificate_request, parse_tls,
)

if TYPE_CHECKING:          # pandas loads when the tables are built (inside read()'s collector pause)
    import pandas as pd

    from .x509 import ParsedCert

HANDSHAKE_PROTOCOLS = ("tls", "ssh", "http", "http2")


@dataclass
class Handshakes:
    """Per-connection handshake facts: ``tls``, ``certs``, ``ssh`` and ``http`` DataFrames."""

    tls: pd.DataFrame
    certs: pd.DataFrame
    ssh: pd.DataFrame
    http: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _x509():
    """The certificate module (and with it cryptography), loaded when a certificate is parsed or verified."""
    from . import x509
    return x509


def _keylog():
    """The key-log module, loaded (with cryptography's AEAD ciphers) only when a key log is given."""
    from . import keylog
    return keylog


class HandshakeAnalyzer:
    """Parses each connection's handshakes as its streams arrive; keeps only the parsed rows.

    Feed it from the engine (``commpath.read(..., keep_streams=False, on_streams=a)``) so
    memory does not grow with the capture, then take :meth:`result`. Given as the sink itself
    (not ``a.feed``), it also takes TLS connections in batches where the engine holds their
    bytes (:meth:`tls_batch`): the same rows, with no copy per connection.
    """

    def __init__(self, ca=None, keylog=None):
        self.cas = _x509().load_ca_bundle(ca) if ca else None
        self.keys = _keylog().load_keylog(keylog) if keylog else None
        self.max_appdata = 32 if self.keys is not None else 4
        self.tls_rows: list[dict] = []
        self.ssh_rows: list[dict] = []
        self.http_rows: list[dict] = []
        self.certs = _CertBook()
        #: TLS connections waiting for the C walker (None: each is parsed in Python when fed)
        self._pending: list[tuple] | None = [] if self.keys is None and _hs_fast.walker() is not None else None

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

    def absorb(self, part: dict, flow_base: int = 0) -> None:
        """Add :meth:`unresolved` of the next capture of the run, its flow ids moved on by ``flow_base``:
        :meth:`result` is then what one analyzer fed every capture in turn gives."""
        def moved(rows):
            return [(row[0] + flow_base,) + tuple(row[1:]) for row in rows]
        self.tls_rows += moved(part["tls"])
        self.ssh_rows += moved(part["ssh"])
        self.http_rows += moved(part["http"])
        book = self.certs
        for der, roles, flows in part["certs"]:
            for role in roles:
                book.add(der, flows[0] + flow_base, role)
            for flow in flows[1:]:
                book.add(der, flow + flow_base, roles[0])
        room = MAX_INCOMPLETE - len(book.incomplete)
        book.incomplete += [(f + flow_base,) + tuple(rest) for f, *rest in part["incomplete"][:max(room, 0)]]

    def _result(self) -> Handshakes:
        if self._pending:
            self._flush()
        warnings: list[str] = []
        if self.keys is not None:
            vis, ver = _TLS_NAMES.index("certs_visibility"), _TLS_NAMES.index("tls_version")
            n_dec = sum(1 for r in self.tls_rows if r[vis] == "decrypted")
            n13 = sum(1 for r in self.tls_rows if r[ver] == "TLS 1.3")
            if n13 and not n_dec:
                warnings.append(f"key log: none of the {n13} TLS 1.3 connections matched a logged client random")
        by_flow = itemgetter(0)                       # flow_id is the first column of each table
        rows = resolve(self.tls_rows, 0, _TLS_NAMES.index("client_cert"))     # resumed sessions inherit
        rows = complete_from_run(rows, self.certs, self.cas, _TLS_NAMES)        # and chains the run completes
        tls = _frame(sorted(rows, key=by_flow), _TLS_ALL)
        ssh = _frame(sorted(self.ssh_rows, key=by_flow), SSH_COLUMNS)
        http = _frame(sorted(self.http_rows, key=by_flow), HTTP_COLUMNS)   # stable: parse order kept
        return Handshakes(tls=tls, certs=self.certs.frame(), ssh=ssh, http=http, warnings=warnings)


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


def _frame(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    """A DataFrame from rows given as tuples in the order of ``columns``."""
    import pandas as pd
    if not rows:
        return empty_frame(columns)
    n = len(rows)
    data = {}
    for (name, dtype), values in zip(columns.items(), zip(*rows)):
        if dtype == "bool":
            data[name] = np.fromiter(map(bool, values), bool, n)
        elif dtype == "category":
            data[name] = _categorical(values)
        elif dtype == "object":
            data[name] = list(values)
        elif dtype == "string":
            data[name] = _strings(values)
        else:                                       # typed once, here, instead of inferred then cast
            data[name] = pd.array(values, dtype=dtype)
    df = pd.DataFrame(data)
    if list(map(str, df.dtypes)) == list(columns.values()):
        return df                                   # conform would only copy it
    return conform(df, columns)


_STRING_ITEMS = frozenset((str, type(None)))


def _categorical(values: tuple):
    """``pd.Categorical(values)`` (categories: the sorted distinct values, None missing), from codes."""
    import pandas as pd
    distinct = set(values)
    distinct.discard(None)
    if not distinct or not set(map(type, distinct)) <= _STRING_ITEMS:
        return list(values)                         # conform's cast decides, as before
    categories = sorted(distinct)
    code = {c: i for i, c in enumerate(categories)}
    code[None] = -1
    codes = np.fromiter(map(code.__getitem__, values), np.int64, len(values))
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories))


def _strings(values: tuple) -> pd.api.extensions.ExtensionArray:
    """``pd.array(values, dtype="string")``, built by pyarrow in one go when every value is a str or None."""
    import pandas as pd
    dtype = pd.StringDtype()
    if dtype.storage == "pyarrow" and set(map(type, values)) <= _STRING_ITEMS:
        import pyarrow as pa
        try:
            out = pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(values, type=pa.large_string())]))
        except (pa.ArrowException, UnicodeError):     # e.g. lone surrogates: pandas' own way decides
            out = None
        if out is not None and out.dtype == dtype:
            return out
    return pd.array(values, dtype="string")


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


def _tls_row(hs: TlsHandshake, ts, dst_ip, cas, keys, certs: "_CertBook", tunneled: bool,
             starttls_from: str | None = None) -> tuple:
    """One row of the ``tls`` table, as a tuple in column order."""
    if keys is not None and hs.tls_version == "TLS 1.3" and hs.client_random in keys:
        _decrypt(hs, keys[hs.client_random])
    certificates = _cert_columns(hs.flow_id, hs.sni, hs.server_chain, hs.client_chain, ts, dst_ip, cas, certs,
                                 tunneled)
    session = session_keys(hs.resumed, ts, *hs.session) if hs.session is not None else None
    return _TLS_ORDER(_HS_GET(hs) + certificates + (hs.inference, tunneled, starttls_from is not None, starttls_from,
                                                    hs.ja3, hs.ja3s, hs.ja4s, hs.kex_group, hs.ech)) + (session,)


def _cert_columns(flow_id: int, sni, server_chain: list[bytes], client_chain: list[bytes], ts, dst_ip, cas,
                  certs: "_CertBook", tunneled: bool) -> tuple:
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


def _decrypt(hs: TlsHandshake, secrets: dict[str, bytes]) -> None:
    """Reveal a TLS 1.3 handshake's certificates with the logged handshake traffic secrets."""
    s_secret = secrets.get("SERVER_HANDSHAKE_TRAFFIC_SECRET")
    c_secret = secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET")
    if s_secret is None or hs.cipher_id is None:
        return
    s_data, _, s_err = _keylog().decrypt_flight(hs.server_encrypted, s_secret, hs.cipher_id)
    if not s_data:
        hs.error(f"key log: server flight does not decrypt ({s_err or 'no handshake data'})")
        return
    hs.certs_visibility = "decrypted"
    for mtype, body in _keylog().split_messages(s_data):
        if mtype == HS_ENCRYPTED_EXTENSIONS:
            hs.alpn = hs.alpn or _ee_alpn(body)
        elif mtype == HS_CERTIFICATE_REQUEST:
            hs.cert_request = True
            hs.cert_request_cas = parse_certificate_request(body, hs, 0x0304)
        elif mtype == HS_CERTIFICATE:
            hs.server_chain = parse_certificate_list(body, hs, True, "server")
    if s_err:
        hs.error(f"key log: {s_err}")
    if c_secret is None:
        hs.client_cert = "unknown" if hs.cert_request else "not-requested"
        return
    c_data, _, c_err = _keylog().decrypt_flight(hs.client_encrypted, c_secret, hs.cipher_id)
    client_msgs = _keylog().split_messages(c_data)
    cert_msg = next((b for t, b in client_msgs if t == HS_CERTIFICATE), None)
    if not hs.cert_request:
        hs.client_cert = "not-requested"
    elif cert_msg is not None:
        hs.client_chain = parse_certificate_list(cert_msg, hs, True, "client")
        hs.client_cert = "presented" if hs.client_chain else "empty"
    else:
        hs.client_cert = "unknown"
    if hs.inference:
        hs.inference += f"; decrypted: {hs.client_cert}"
    if c_err and not c_data:
        hs.error(f"key log: client flight: {c_err}")


def _ee_alpn(body: bytes) -> str | None:
    try:
        r = Reader(body)
        exts = r.sub(2)
        while exts.remaining() > 0:
            etype, data = exts.u16(), exts.vec(2)
            if etype == EXT_ALPN:
                return Reader(data).sub(2).vec(1).decode("ascii", "replace")
    except Truncated:
        return None
    return None


# --------------------------------------------------------------------------- certificates

class _CertBook:
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
            pc = self._parsed[fp] = _x509().parse_certificate(self._ders[fp])
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
        return _frame(rows, CERT_COLUMNS)            # not_before/not_after: UTC datetimes, typed at once
