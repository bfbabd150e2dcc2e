"""TLS handshakes of many connections at once: the common case walked in C (_c/tls_walk.c), the rest by tls.py."""

from __future__ import annotations

import ctypes
import struct
from bisect import bisect_right

import numpy as np

from ._memo import BoundedMemo
from ._tls_tables import CIPHER_SUITES
from .tls import (
    ClientHello, _client_versions, _u16_list, client_cert_tls13, ja4, parse_certificate_list,
    parse_certificate_request,
)
from ._tls_wire import version_name

# Field indices of cp_tls_walk's output (the enum at the top of tls_walk.c).
(STATUS, CH_OFF, CH_LEN, CH_VERSION, CH_SID_OFF, CH_SID_LEN, CS_OFF, CS_LEN,
 SNI_OFF, SNI_LEN, ALPN_OFF, ALPN_LEN, SV_OFF, SV_LEN, SIG_OFF, SIG_LEN,
 CH_FLAGS, N_EXT, SH_VERSION, SH_SELECTED, SH_CIPHER, SH_ALPN_OFF, SH_ALPN_LEN,
 SH_PSK, TLS13, CERT_OFF, CERT_LEN, CR_OFF, CR_LEN, CCERT_OFF, CCERT_LEN,
 FLAGS, N_CLIENT_APP, N_SERVER_APP, APP0, APP1, APP2, APP_COMPLETE,
 C_ENC_ALERTS, S_ENC_ALERTS, N_RANGES_C, N_RANGES_S, RANGES) = range(43)
MAX_RANGES = 8
FIELDS = RANGES + 4 * MAX_RANGES
MAX_EXT = 64
CHF_EARLY_DATA, CHF_PSK, CHF_ALPS = 1, 2, 4
F_SAW_CKE, F_FULL, F_SHD, F_SERVER_CCS, F_CLIENT_CCS, F_SID_MATCH = 1, 2, 4, 8, 16, 32
AEAD_ALERT = 2 + 1 + 16

#: Connections handed to C in one call.
BATCH = 256


def _load():
    """cp_tls_walk with its signature, or None when the compiled kernels are not available."""
    try:
        from ._native import lib
        fn = lib().cp_tls_walk
    except Exception:              # noqa: BLE001 - no compiler or an older library: Python parses all
        return None
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                   ctypes.c_void_p]
    fn.restype = ctypes.c_int64
    return fn


_walk = None
_loaded = False


def walker():
    """The C walker (loaded once), or None."""
    global _walk, _loaded
    if not _loaded:
        _walk, _loaded = _load(), True
        if _walk is not None and _walk(0, None, None, 4, None, None) != FIELDS:
            _walk = None
    return _walk


def walk(flows: list, max_appdata: int) -> tuple[list[list[int]], bytes]:
    """cp_tls_walk over ``flows`` (FlowStreams): one list of FIELDS ints per flow, and the extension types."""
    fn = walker()
    n = len(flows)
    datas = []
    for fs in flows:
        datas.append(fs.fwd.data)
        datas.append(fs.rev.data)
    ptrs = (ctypes.c_char_p * (2 * n))(*datas)
    lens = np.fromiter(map(len, datas), np.int64, 2 * n)
    out = np.zeros(n * FIELDS, np.int64)
    ext = ctypes.create_string_buffer(n * 2 * MAX_EXT)
    fn(n, ctypes.addressof(ptrs), lens.ctypes.data, max_appdata, out.ctypes.data, ctypes.addressof(ext))
    del datas
    return out.reshape(n, FIELDS).tolist(), ext.raw


class _Errors:
    """Stands in for a TlsHandshake where certificate parsers report errors (any: take the careful path)."""

    __slots__ = ("partial", "parse_error")

    def __init__(self):
        self.partial = False
        self.parse_error = None

    def error(self, message: str) -> None:
        self.partial = True


_VERSIONS = BoundedMemo(1024)
_CLIENT_VERSIONS = BoundedMemo(1024)
_CIPHERS = BoundedMemo(1024)
_ALPN = BoundedMemo(1024)
_JA4 = BoundedMemo(4096)
_U16 = struct.Struct(">H")


def _alpn(raw: bytes) -> tuple[str | None, bytes]:
    """Offered ALPN text and the first protocol of a well-formed ALPN extension body (checked in C)."""
    got = _ALPN.get(raw)
    if got is None:
        names, p, n = [], 2, len(raw)
        while p < n:
            q = p + 1 + raw[p]
            names.append(raw[p + 1:q])
            p = q
        text = ",".join(a.decode("ascii", "replace") for a in names) if names else None
        got = _ALPN.remember(raw, (text, names[0] if names else b""))
    return got


def _ja4(sv: bytes, legacy: int, cs: bytes, exts: bytes, first_alpn: bytes, sig: bytes) -> str:
    key = (sv, legacy, cs, exts, first_alpn, sig)
    got = _JA4.get(key)
    if got is None:
        ch = ClientHello(legacy_version=legacy, ciphers=_u16_list(cs), extensions=_u16_list(exts),
                         alpn_raw=[first_alpn] if first_alpn else [], versions=_u16_list(sv),
                         sig_algs=_u16_list(sig))
        got = _JA4.remember(key, ja4(ch))
    return got


def _frames(out: set, stream, v: list, at: int, count: int) -> None:
    offs = stream.offsets
    if not offs or not count:
        return
    frames = stream.frames
    for k in range(at, at + 2 * count, 2):
        i = bisect_right(offs, v[k]) - 1
        out.update(frames[i if i > 0 else 0:bisect_right(offs, v[k + 1])])


def fast_fields(fs, v: list, exts: bytes, ext_at: int):
    """The TLS columns the handshake shows, from one connection's walk; None: the careful path decides.

    Returns (row values from tls_version to handshake_frames in TlsHandshake terms, server chain,
    client chain, sni, inference) — see handshakes._fast_row for the order.
    """
    cd, sd = fs.fwd.data, fs.rev.data
    legacy = v[CH_VERSION]
    sv = cd[v[SV_OFF]:v[SV_OFF] + v[SV_LEN]] if v[SV_OFF] >= 0 else b""
    key = (sv, legacy)
    client_versions = _CLIENT_VERSIONS.get(key)
    if client_versions is None:
        client_versions = _CLIENT_VERSIONS.remember(key, _client_versions(tuple(_u16_list(sv)), legacy))
    sni = cd[v[SNI_OFF]:v[SNI_OFF] + v[SNI_LEN]].decode("ascii", "replace") if v[SNI_OFF] >= 0 else None
    if v[ALPN_OFF] >= 0:
        alpn_offered, first_alpn = _alpn(cd[v[ALPN_OFF]:v[ALPN_OFF] + v[ALPN_LEN]])
    else:
        alpn_offered, first_alpn = None, b""
    sig = cd[v[SIG_OFF]:v[SIG_OFF] + v[SIG_LEN]] if v[SIG_OFF] >= 0 else b""
    ja4_text = _ja4(sv, legacy, cd[v[CS_OFF]:v[CS_OFF] + v[CS_LEN]], exts[ext_at:ext_at + 2 * v[N_EXT]],
                    first_alpn, sig)
    version = v[SH_SELECTED] or v[SH_VERSION]
    tls_version = _VERSIONS.get(version)
    if tls_version is None:
        tls_version = _VERSIONS.remember(version, version_name(version))
    cipher_id = v[SH_CIPHER]
    cipher = _CIPHERS.get(cipher_id)
    if cipher is None:
        cipher = _CIPHERS.remember(cipher_id, CIPHER_SUITES.get(cipher_id) or f"0x{cipher_id:04X}")
    alpn = sd[v[SH_ALPN_OFF]:v[SH_ALPN_OFF] + v[SH_ALPN_LEN]].decode("ascii", "replace") \
        if v[SH_ALPN_OFF] >= 0 else None
    alerts = ["encrypted:client"] * min(v[C_ENC_ALERTS], 16) if v[C_ENC_ALERTS] else []
    if v[S_ENC_ALERTS]:
        alerts += ["encrypted:server"] * min(v[S_ENC_ALERTS], 16 - len(alerts))
    server_chain: list = []
    client_chain: list = []
    cas: list = []
    cert_request = False
    flags = v[FLAGS]
    inference = None
    if v[TLS13]:
        visibility = "not-visible"
        resumed = bool(v[SH_PSK])
        n_app = v[N_CLIENT_APP]
        sizes = (v[APP0], v[APP1], v[APP2])[:n_app]
        complete = v[APP_COMPLETE] == (3 if n_app >= 2 else 1) if n_app else True
        ch_flags = v[CH_FLAGS]
        client_cert, inference = client_cert_tls13(
            resumed, bool(ch_flags & CHF_EARLY_DATA), cipher_id, bool(ch_flags & CHF_ALPS), sizes, complete)
        encrypted_alert = n_app > 0 and v[APP0] == AEAD_ALERT
        if encrypted_alert:
            alerts.append("encrypted:client")
        established = v[N_SERVER_APP] > 0 and n_app > 0 and not encrypted_alert
    else:
        visibility = "visible"
        errors = None
        server_ccs = bool(flags & F_SERVER_CCS)
        full = bool(flags & F_FULL)
        resumed = (server_ccs and not full) or (not server_ccs and not full and bool(flags & F_SID_MATCH))
        if v[CERT_OFF] >= 0:
            errors = _Errors()
            server_chain = parse_certificate_list(sd[v[CERT_OFF]:v[CERT_OFF] + v[CERT_LEN]], errors, False, "server")
        if v[CR_OFF] >= 0:
            errors = errors or _Errors()
            cert_request = True
            cas = parse_certificate_request(sd[v[CR_OFF]:v[CR_OFF] + v[CR_LEN]], errors, version)
        if v[CCERT_OFF] >= 0:
            errors = errors or _Errors()
            client_chain = parse_certificate_list(cd[v[CCERT_OFF]:v[CCERT_OFF] + v[CCERT_LEN]], errors, False,
                                                  "client")
        if errors is not None and errors.partial:
            return None
        if resumed:
            client_cert = "unknown"
        elif cert_request:
            if v[CCERT_OFF] >= 0:
                client_cert = "presented" if client_chain else "empty"
            elif flags & F_SAW_CKE:
                client_cert = "empty"
            else:
                client_cert = "unknown"
        elif flags & F_SHD:
            client_cert = "not-requested"
        else:
            client_cert = "unknown"
        established = server_ccs and bool(flags & F_CLIENT_CCS)
    frames: set = set()
    _frames(frames, fs.fwd, v, RANGES, v[N_RANGES_C])
    _frames(frames, fs.rev, v, RANGES + 2 * MAX_RANGES, v[N_RANGES_S])
    return (tls_version, client_versions, sni, alpn_offered, alpn, cipher, cipher_id, ja4_text, resumed,
            established, cert_request, cas, visibility, client_cert, alerts, sorted(frames),
            server_chain, client_chain, inference)
