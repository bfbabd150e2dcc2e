"""TLS handshakes of many connections at once: the common case walked in C (_c/tls_walk.c), the rest by tls.py."""

from __future__ import annotations

import ctypes
from bisect import bisect_right
from itertools import repeat

import numpy as np

from ._fingerprints import EXT_ECH, group_name, ja3, ja3s, ja4s, key_exchange_curve, server_extensions
from ._memo import BoundedMemo
from ._sessions import session_keys
from ._tls_tables import CIPHER_SUITES
from ._tls13_client_cert import client_cert_tls13
from ._tls_certmsg import parse_certificate_list, parse_certificate_request
from ._tls_hello import client_versions, ja4, u16_list
from ._tls_model import ClientHello
from ._tls_wire import version_name

# Field indices of cp_tls_walk's output (the enum at the top of tls_walk.c).
(STATUS, CH_OFF, CH_LEN, CH_VERSION, CH_SID_OFF, CH_SID_LEN, CS_OFF, CS_LEN,
 SNI_OFF, SNI_LEN, ALPN_OFF, ALPN_LEN, SV_OFF, SV_LEN, SIG_OFF, SIG_LEN,
 CH_FLAGS, KEY_LEN, SH_VERSION, SH_SELECTED, SH_CIPHER, SH_ALPN_OFF, SH_ALPN_LEN,
 SH_PSK, TLS13, CERT_OFF, CERT_LEN, CR_OFF, CR_LEN, CCERT_OFF, CCERT_LEN,
 FLAGS, N_CLIENT_APP, N_SERVER_APP, APP0, APP1, APP2, APP_COMPLETE,
 C_ENC_ALERTS, S_ENC_ALERTS, N_RANGES_C, N_RANGES_S,
 SH_EXT_OFF, SH_EXT_LEN, SKX_OFF, SKX_LEN,
 SH_SID_OFF, SH_SID_LEN, CH_TICKET_OFF, CH_TICKET_LEN, NST_OFF, NST_LEN, RANGES) = range(53)
MAX_RANGES = 8
FIELDS = RANGES + 4 * MAX_RANGES
_RANGES_S = RANGES + 2 * MAX_RANGES      # the server's ranges follow the client's
KEY_CAP = 1024                           # bytes of ClientHello key per connection
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
_frames_c = None


def frames_fn():
    """cp_tls_frames with its signature (the library is there: the walker loaded)."""
    global _frames_c
    if _frames_c is None:
        from ._native import lib
        fn = lib().cp_tls_frames
        fn.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_void_p]
        fn.restype = ctypes.c_int64
        _frames_c = fn
    return _frames_c


def walker():
    """The C walker (loaded once), or None."""
    global _walk, _loaded
    if not _loaded:
        _walk, _loaded = _load(), True
        if _walk is not None and _walk(0, None, None, 4, None, None) != FIELDS * 65536 + KEY_CAP:
            _walk = None
    return _walk


def _bytes_data_offset() -> int | None:
    """Where CPython keeps a bytes object's bytes, from the object's address (checked on samples)."""
    samples = [b"commpath", bytes(range(256)) * 3, b"x" * 100_000]
    offsets = {ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value - id(b) for b in samples}
    return offsets.pop() if len(offsets) == 1 else None


_DATA_OFFSET = _bytes_data_offset()


def walk(flows: list, max_appdata: int) -> tuple[list[list[int]], bytes]:
    """cp_tls_walk over ``flows`` (FlowStreams): one list of FIELDS ints per flow, and the ClientHello keys
    (KEY_CAP bytes per flow)."""
    n = len(flows)
    datas = []
    for fs in flows:
        datas.append(fs.fwd.data)
        datas.append(fs.rev.data)
    if not all(type(d) is bytes for d in datas):
        datas = [d if type(d) is bytes else bytes(d) for d in datas]     # bytearray, memoryview: copied
    if _DATA_OFFSET is not None:
        # the bytes' addresses without a ctypes object each (``datas`` keeps them alive meanwhile)
        ptrs = np.fromiter(map(id, datas), np.int64, 2 * n)
        ptrs += _DATA_OFFSET
        address = ptrs.ctypes.data
    else:
        ptrs = (ctypes.c_char_p * (2 * n))(*datas)
        address = ctypes.addressof(ptrs)
    out, keys = _walk_at(n, address, np.fromiter(map(len, datas), np.int64, 2 * n), max_appdata)
    return out.tolist(), keys


def _walk_at(n: int, address: int, lens: np.ndarray, max_appdata: int) -> tuple[np.ndarray, bytes]:
    """cp_tls_walk over ``n`` connections whose 2n directions' addresses are at ``address``: its output
    as an (n, FIELDS) array, and the ClientHello keys."""
    out = np.zeros(n * FIELDS, np.int64)
    keys = ctypes.create_string_buffer(n * KEY_CAP)
    walker()(n, address, lens.ctypes.data, max_appdata, out.ctypes.data, ctypes.addressof(keys))
    return out.reshape(n, FIELDS), keys.raw


class _Errors:
    """Stands in for a TlsHandshake where certificate parsers report errors (any: take the careful path)."""

    __slots__ = ("partial", "parse_error")

    def __init__(self):
        self.partial = False
        self.parse_error = None

    def error(self, message: str) -> None:
        self.partial = True


#: ClientHello key (see tls_walk.c) -> (offered versions, offered ALPN, JA4, JA3, ECH offered).
_HELLOS = BoundedMemo(4096)
#: ServerHello (legacy version, selected version, cipher, extension types, ALPN) -> (JA3S, JA4S).
_SERVER_PRINTS = BoundedMemo(1024)
#: (version, cipher) of a ServerHello -> (version name, cipher name).
_SERVER = BoundedMemo(1024)


def _hello(key: bytes) -> tuple[str, str | None, str, str, bool]:
    """(offered versions, offered ALPN, JA4, JA3, ECH offered) of a ClientHello key: legacy version,
    then length-prefixed supported_versions, cipher suites, extension types, ALPN extension body,
    signature_algorithms, supported_groups and ec_point_formats."""
    legacy = (key[0] << 8) | key[1]
    parts = []
    p = 2
    for _ in range(7):
        n = (key[p] << 8) | key[p + 1]
        parts.append(key[p + 2:p + 2 + n])
        p += 2 + n
    sv, cs, exts, alpn, sig, groups, formats = parts
    names = []
    p, n = 2, len(alpn)
    while p < n:                                   # a well-formed ALPN body (checked in C)
        q = p + 1 + alpn[p]
        names.append(alpn[p + 1:q])
        p = q
    versions = u16_list(sv)
    ch = ClientHello(legacy_version=legacy, ciphers=u16_list(cs), extensions=u16_list(exts),
                     alpn_raw=names[:1], versions=versions, sig_algs=u16_list(sig))
    offered = ",".join(a.decode("ascii", "replace") for a in names) if names else None
    ja3_text = ja3(legacy, tuple(ch.ciphers), tuple(ch.extensions), tuple(u16_list(groups)), tuple(formats))
    return client_versions(tuple(versions), legacy), offered, ja4(ch), ja3_text, EXT_ECH in ch.extensions


def _server_prints(key: tuple) -> tuple[str, str]:
    legacy, selected, cipher, types, alpn = key
    return ja3s(legacy, cipher, types), ja4s(selected or legacy, cipher, types, alpn)


def _server(version: int, cipher_id: int) -> tuple[str | None, str]:
    return version_name(version), CIPHER_SUITES.get(cipher_id) or f"0x{cipher_id:04X}"


def rows(jobs: list[tuple], max_appdata: int, cert_columns, careful) -> list[tuple]:
    """TLS rows of ``jobs`` = (flows, ts, dst_ip, tunneled, starttls_from), in the column order of the tls table.

    ``cert_columns(flow_id, sni, server_chain, client_chain, ts, dst_ip, tunneled)`` gives the six
    certificate columns; ``careful(job)`` the row of a connection that the walk hands back.
    """
    walked, keys = walk([job[0] for job in jobs], max_appdata)
    out = []
    append = out.append
    for k, job in enumerate(jobs):
        v = walked[k]
        row = None
        if v[0] == 0:
            fs, ts, dst_ip, tunneled, starttls_from = job
            row = _row(fs.flow_id, ts, dst_ip, tunneled, starttls_from, fs.fwd.data, fs.rev.data, _frames(fs, v),
                       v[:RANGES], keys, k * KEY_CAP, cert_columns)
        append(careful(job) if row is None else row)
    return out


def batch_rows(batch, max_appdata: int, cert_columns, careful, needs_dst: bool = True) -> list[tuple]:
    """TLS rows of the connections of a StreamBatch (engine buffers, read in place), as :func:`rows`;
    ``careful(k)`` gives the row of connection ``k`` when the walk hands it back. Without ``needs_dst``
    ``cert_columns`` is given None for the dialled address (it does not verify)."""
    w, keys = _walk_at(batch.n, batch.pointers.ctypes.data, batch.lens, max_appdata)
    flat, starts, sizes = batch.flat, batch.starts, batch.sizes
    frames_of = _batch_frames(batch, w)
    walked = w[:, :RANGES].tolist()                  # the byte ranges were for the frames
    out = []
    append = out.append
    dst_ips = batch.dst_ips if needs_dst else repeat(None)
    for k, (v, flow_id, ts, dst_ip, frames) in enumerate(zip(walked, batch.flow_ids, batch.ts, dst_ips, frames_of)):
        row = None
        if v[0] == 0:
            c, s = starts[2 * k], starts[2 * k + 1]
            row = _row(flow_id, ts, dst_ip, False, None, flat[c:c + sizes[2 * k]], flat[s:s + sizes[2 * k + 1]],
                       frames, v, keys, k * KEY_CAP, cert_columns)
        append(careful(k) if row is None else row)
    return out


def _batch_frames(batch, w: np.ndarray) -> list[list[int]]:
    """Per connection of ``batch``, the sorted distinct frames that carried the byte ranges of its walk ``w``
    (cp_tls_frames: what :func:`_frames` bisects, over the batch's marks)."""
    n = batch.n
    cap = MAX_RANGES * len(batch.offsets) + 16           # each range takes at most its direction's marks
    out, ends = np.empty(cap, np.int64), np.empty(n, np.int64)
    total = frames_fn()(n, w.ctypes.data, batch.offsets.ctypes.data, batch.frames.ctypes.data,
                        batch.mark_ends.ctypes.data, out.ctypes.data, cap, ends.ctypes.data)
    if total < 0:
        raise RuntimeError("cp_tls_frames: no room (a bug)")
    values, bounds = out[:total].tolist(), ends.tolist()
    return [values[a:e] for a, e in zip([0] + bounds[:-1], bounds)]


def _row(flow_id: int, ts, dst_ip, tunneled: bool, starttls_from: str | None, cd, sd, frames: list, v: list, keys: bytes,
         key_at: int, cert_columns) -> tuple | None:
    """One connection's row from its walk; None: the careful parser decides.

    ``cd``/``sd``: the client's and server's bytes (bytes or a memoryview); ``v``: the first RANGES
    fields of its walk; ``frames``: the sorted distinct frames of the handshake."""
    (_, _, _, legacy, ch_sid_off, ch_sid_len, cs_off, cs_len, sni_off, sni_len, alpn_off, alpn_len, sv_off, sv_len, sig_off, sig_len,
     ch_flags, key_len, sh_version, sh_selected, cipher_id, sh_alpn_off, sh_alpn_len, sh_psk, tls13, cert_off,
     cert_len, cr_off, cr_len, ccert_off, ccert_len, flags, n_app, n_server_app, app0, app1, app2, app_complete,
     c_alerts, s_alerts, n_ranges_c, n_ranges_s, sh_ext_off, sh_ext_len, skx_off, skx_len,
     sh_sid_off, sh_sid_len, ticket_off, ticket_len, nst_off, nst_len) = v
    key = keys[key_at:key_at + key_len]
    hello = _HELLOS.get(key)
    if hello is None:
        hello = _HELLOS.remember(key, _hello(key))
    client_versions, alpn_offered, ja4_text, ja3_text, ech = hello
    sni = bytes(cd[sni_off:sni_off + sni_len]).decode("ascii", "replace") if sni_off >= 0 else None
    version = sh_selected or sh_version
    server = _SERVER.get((version, cipher_id))
    if server is None:
        server = _SERVER.remember((version, cipher_id), _server(version, cipher_id))
    tls_version, cipher = server
    alpn_raw = bytes(sd[sh_alpn_off:sh_alpn_off + sh_alpn_len]) if sh_alpn_off >= 0 else b""
    alpn = alpn_raw.decode("ascii", "replace") if sh_alpn_off >= 0 else None
    types, group = server_extensions(bytes(sd[sh_ext_off:sh_ext_off + sh_ext_len])) if sh_ext_off >= 0 else ((), None)
    if skx_off >= 0 and group is None:
        group = key_exchange_curve(bytes(sd[skx_off:skx_off + min(skx_len, 3)]))
    server_key = (sh_version, sh_selected, cipher_id, types, alpn_raw)
    prints = _SERVER_PRINTS.get(server_key)
    if prints is None:
        prints = _SERVER_PRINTS.remember(server_key, _server_prints(server_key))
    ja3s_text, ja4s_text = prints
    alerts = ["encrypted:client"] * min(c_alerts, 16) if c_alerts else []
    if s_alerts:
        alerts += ["encrypted:server"] * min(s_alerts, 16 - len(alerts))
    server_chain = client_chain = ()
    cas: list = []
    cert_request = False
    inference = None
    session = None
    if tls13:
        visibility = "not-visible"
        resumed = sh_psk == 1
        sizes = (app0, app1, app2)[:n_app]
        complete = app_complete == (3 if n_app >= 2 else 1) if n_app else True
        client_cert, inference = client_cert_tls13(
            resumed, bool(ch_flags & CHF_EARLY_DATA), cipher_id, bool(ch_flags & CHF_ALPS), sizes, complete)
        encrypted_alert = n_app > 0 and app0 == AEAD_ALERT
        if encrypted_alert:
            alerts.append("encrypted:client")
        established = n_server_app > 0 and n_app > 0 and not encrypted_alert
    else:
        visibility = "visible"
        errors = None
        server_ccs = bool(flags & F_SERVER_CCS)
        full = bool(flags & F_FULL)
        resumed = (server_ccs and not full) or (not server_ccs and not full and bool(flags & F_SID_MATCH))
        if cert_off >= 0:
            errors = _Errors()
            server_chain = parse_certificate_list(bytes(sd[cert_off:cert_off + cert_len]), errors, False, "server")
        if cr_off >= 0:
            errors = errors or _Errors()
            cert_request = True
            cas = parse_certificate_request(bytes(sd[cr_off:cr_off + cr_len]), errors, version)
        if ccert_off >= 0:
            errors = errors or _Errors()
            client_chain = parse_certificate_list(bytes(cd[ccert_off:ccert_off + ccert_len]), errors, False,
                                                  "client")
        if errors is not None and errors.partial:
            return None
        if resumed:
            client_cert = "unknown"
        elif cert_request:
            if ccert_off >= 0:
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
        session = session_keys(resumed, ts, bytes(cd[ch_sid_off:ch_sid_off + ch_sid_len]),
                               bytes(cd[ticket_off:ticket_off + ticket_len]) if ticket_off >= 0 else b"",
                               bytes(sd[sh_sid_off:sh_sid_off + sh_sid_len]),
                               bytes(sd[nst_off:nst_off + nst_len]) if nst_off >= 0 else b"")
    s_fps, c_fps, s_ok, c_ok, verify_error, reasons = cert_columns(flow_id, sni, server_chain, client_chain, ts,
                                                                   dst_ip, tunneled)
    return (flow_id, tls_version, client_versions, sni, alpn_offered, alpn, cipher, cipher_id, ja4_text,
            False, resumed, established, cert_request, cas, s_fps, c_fps, visibility, client_cert, s_ok, c_ok,
            verify_error, alerts, False, None, frames, inference, tunneled, starttls_from is not None, starttls_from,
            reasons, ja3_text, ja3s_text, ja4s_text, group_name(group), ech, session)


def _frames(fs, v: list) -> list[int]:
    """The sorted distinct frames that carried the byte ranges of the walk ``v`` of connection ``fs``."""
    out: list = []
    for stream, at, count in ((fs.fwd, RANGES, v[N_RANGES_C]), (fs.rev, _RANGES_S, v[N_RANGES_S])):
        offs, frames = stream.offsets, stream.frames
        if not count or not offs:
            continue
        for k in range(at, at + 2 * count, 2):
            i = bisect_right(offs, v[k]) - 1
            out += frames[i if i > 0 else 0:bisect_right(offs, v[k + 1])]
    return sorted(set(out))
