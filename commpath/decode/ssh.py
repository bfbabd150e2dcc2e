"""SSH banners and KEXINIT: offered and negotiated algorithms, HASSH and HASSHServer, weak algorithms."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from ._fingerprints import ssh_host_key_fingerprint
from ._memo import BoundedMemo
from ._tls_wire import Reader, Truncated
from .streams import FlowStreams

MAX_BANNER = 255            # RFC 4253 4.2
MAX_PRE_BANNER_LINES = 32
MAX_PACKET = 35000          # RFC 4253 6.1
MAX_PACKETS = 8
MSG_KEXINIT = 20

#: KEXINIT name-lists in wire order, as a table.
KEXINIT_LISTS = (
    "kex", "host_key", "enc_c2s", "enc_s2c", "mac_c2s", "mac_s2c",
    "comp_c2s", "comp_s2c", "lang_c2s", "lang_s2c",
)

#: Algorithms considered weak (RFC 9142, RFC 8758, RFC 8332 / OpenSSH deprecations).
WEAK = {
    "kex": {"diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1",
            "diffie-hellman-group-exchange-sha1", "rsa1024-sha1", "gss-group1-sha1-*",
            "gss-gex-sha1-*", "gss-group14-sha1-*"},
    "host_key": {"ssh-dss", "ssh-rsa", "ssh-dss-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com"},
    "enc": {"3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "blowfish-cbc", "cast128-cbc",
            "arcfour", "arcfour128", "arcfour256", "rijndael-cbc@lysator.liu.se", "des-cbc", "none",
            "twofish-cbc", "twofish128-cbc", "twofish256-cbc", "idea-cbc", "seed-cbc@ssh.com"},
    "mac": {"hmac-md5", "hmac-md5-96", "hmac-sha1-96", "hmac-md5-etm@openssh.com",
            "hmac-md5-96-etm@openssh.com", "hmac-sha1-96-etm@openssh.com", "umac-32@openssh.com",
            "none", "hmac-ripemd160", "hmac-ripemd160@openssh.com"},
}


@dataclass
class SshSide:
    banner: str | None = None
    kexinit: dict[str, list[str]] | None = None
    error: str | None = None


@dataclass
class SshHandshake:
    flow_id: int
    client_banner: str | None = None
    server_banner: str | None = None
    hassh: str | None = None
    hassh_server: str | None = None
    kex: str | None = None
    host_key_alg: str | None = None
    cipher_c2s: str | None = None
    cipher_s2c: str | None = None
    mac_c2s: str | None = None
    mac_s2c: str | None = None
    weak_algorithms: list[str] = field(default_factory=list)
    hassh_algorithms: str | None = None
    hassh_server_algorithms: str | None = None
    partial: bool = False
    parse_error: str | None = None
    version: int | None = None
    host_key_fingerprint: str | None = None       # per connection: never taken from the shared derivation


def _banner(data: bytes) -> tuple[str | None, int, str | None]:
    """The identification line and where the binary protocol starts."""
    pos = 0
    for _ in range(MAX_PRE_BANNER_LINES):
        nl = data.find(b"\n", pos, pos + MAX_BANNER + 2)
        if nl < 0:
            if data[pos:pos + 4] == b"SSH-":
                return data[pos:pos + MAX_BANNER].decode("ascii", "replace").rstrip("\r"), len(data), \
                    "identification line not terminated"
            return None, pos, "no SSH identification line"
        line = data[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if line.startswith(b"SSH-"):
            return line.decode("ascii", "replace"), pos, None
    return None, pos, "no SSH identification line"


_KEXINIT = bytes([MSG_KEXINIT])


def _find_kexinit(data: bytes, pos: int) -> tuple[bytes, bool] | str:
    """The first KEXINIT payload after ``pos`` and whether it was cut, or why there is none."""
    for _ in range(MAX_PACKETS):
        if pos + 5 > len(data):
            return "KEXINIT not captured" if pos >= len(data) else "binary packet truncated"
        plen, padlen = struct.unpack_from(">IB", data, pos)
        if plen > MAX_PACKET or plen < padlen + 1:
            return f"binary packet length {plen} is not valid"
        payload = data[pos + 5:pos + 4 + plen - padlen]
        if pos + 4 + plen > len(data):
            if payload[:1] == _KEXINIT:
                return payload, True
            return "binary packet truncated"
        if payload[:1] == _KEXINIT:
            return payload, False
        pos += 4 + plen
    return "no KEXINIT in the first packets"


def _parse_kexinit(payload: bytes, truncated: bool = False):
    r = Reader(payload, 17)                # message type + 16-byte cookie
    lists: dict[str, list[str]] = {}
    try:
        for name in KEXINIT_LISTS:
            raw = r.vec(4)
            lists[name] = raw.decode("ascii", "replace").split(",") if raw else []
    except Truncated as exc:
        return (lists or None), f"KEXINIT truncated: {exc}"
    return lists, ("KEXINIT truncated" if truncated else None)


def protocol_version(client_banner: str | None, server_banner: str | None) -> int | None:
    """The SSH protocol the two identification lines agree on (RFC 4253 5.1): 1 when either side
    speaks only 1.x (a 1.99 server falls back to it), 2 when both speak 2.0 or 1.99; None if unknown."""
    versions = [b[4:].split("-", 1)[0] for b in (client_banner, server_banner) if b and b.startswith("SSH-")]
    if not versions:
        return None
    if any(v.startswith("1.") and v != "1.99" for v in versions):
        return 1
    return 2 if all(v in ("2.0", "1.99") for v in versions) else None


def _hassh(lists: dict[str, list[str]], suffix: str) -> tuple[str, str]:
    text = ";".join(",".join(lists.get(k, [])) for k in ("kex", f"enc_{suffix}", f"mac_{suffix}",
                                                          f"comp_{suffix}"))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(), text


def _negotiate(client: list[str], server: list[str]) -> str | None:
    """RFC 4253 7.1: the first client algorithm that the server also supports."""
    sset = set(server)
    return next((a for a in client if a in sset), None)


def _weak(kind: str, alg: str | None) -> bool:
    if not alg:
        return False
    for w in WEAK[kind]:
        if w.endswith("*") and alg.startswith(w[:-1]) or alg == w:
            return True
    return False


def _side_key(data: bytes, found_banner: tuple, ssh1: bool) -> tuple:
    """What of one side decides the record: banner, its error, and the KEXINIT after the cookie
    (``found_banner``: :func:`_banner` of ``data``; ``ssh1``: the connection speaks SSH-1, no KEXINIT).

    The 16-byte cookie is random per connection; the name-lists after it repeat across
    connections of the same software, so sides with equal keys parse alike.
    """
    banner, pos, error = found_banner
    if banner is None or ssh1:
        return banner, error, None, False, pos
    found = _find_kexinit(data, pos)
    if isinstance(found, str):
        return banner, error, found, False, pos
    payload, truncated = found
    if len(payload) < 17:
        return banner, error, payload, truncated, False
    return banner, error, payload[17:], truncated, True


def _side_from_key(key: tuple) -> SshSide:
    banner, error, kex, truncated, extra = key
    side = SshSide(banner=banner, error=error)
    if banner is None or kex is None:
        return side
    if isinstance(kex, str):
        side.error = side.error or kex
        return side
    # the cookie is never read: any 17 bytes stand in for type + cookie (a shorter payload is kept whole)
    side.kexinit, err = _parse_kexinit((b"\0" * 17 + kex) if extra else kex, truncated)
    side.error = side.error or err
    return side


_DERIVED_MAX = 1024                  # pairs of sides kept; each at most _DERIVED_ITEM_BYTES: <= 8 MiB
_DERIVED: BoundedMemo = BoundedMemo(_DERIVED_MAX)
_DERIVED_ITEM_BYTES = 8192


def _key_bytes(key: tuple) -> int:
    return sum(len(part) for side in key for part in side[:3] if isinstance(part, (str, bytes)))


def parse_ssh(flow: FlowStreams) -> SshHandshake:
    """Both sides of an SSH connection's start; never raises on hostile input.

    Connections whose sides have the same banners and KEXINIT name-lists give the same record
    (but for the flow id): it is derived once and reused.
    """
    try:
        cli, srv = _banner(flow.fwd.data), _banner(flow.rev.data)
        ssh1 = protocol_version(cli[0], srv[0]) == 1
        key = (_side_key(flow.fwd.data, cli, ssh1), _side_key(flow.rev.data, srv, ssh1))
        values = _DERIVED.get(key)
        if values is None:
            out = _derive(flow.flow_id, _side_from_key(key[0]), _side_from_key(key[1]))
            values = tuple(tuple(v) if isinstance(v, list) else v for v in map(out.__getattribute__, _FIELDS))
            if _key_bytes(key) <= _DERIVED_ITEM_BYTES:
                _DERIVED.remember(key, values)
    except Exception as exc:   # noqa: BLE001 - defensive: a record still comes out
        out = SshHandshake(flow_id=flow.flow_id)
        out.partial, out.parse_error = True, f"unexpected structure: {exc}"
        return out
    out = SshHandshake(flow.flow_id, *values)
    out.weak_algorithms = list(out.weak_algorithms)
    if out.partial:
        cut = [who for who, side in (("client", flow.fwd), ("server", flow.rev)) if side.limited]
        if cut:                                    # say which bound cut it, not only what is missing
            out.parse_error = (out.parse_error or "incomplete") + f" ({' and '.join(cut)} cut by the capture window: only the first bytes of each " \
                               f"direction are kept)"
    if out.version == 2:
        blob = _host_key_blob(flow.rev.data, srv[1])
        out.host_key_fingerprint = ssh_host_key_fingerprint(blob) if blob is not None else None
    return out


#: Server replies that carry the host key first: KEXDH/KEX_ECDH/KEX_HYBRID reply (31), KEX_DH_GEX_REPLY (33).
_KEX_REPLIES = (31, 33)


def _host_key_blob(data: bytes, pos: int) -> bytes | None:
    """The server's host key (K_S) from its key-exchange reply, among the clear-text packets after its
    identification line; None if not captured. (Type 31 is also DH GEX's group message: a host key
    blob is told apart by its key type name.)"""
    for _ in range(MAX_PACKETS):
        if pos + 6 > len(data):
            return None
        plen, padlen = struct.unpack_from(">IB", data, pos)
        if plen > MAX_PACKET or plen < padlen + 1 or pos + 4 + plen > len(data):
            return None
        payload = data[pos + 5:pos + 4 + plen - padlen]
        if payload[:1] and payload[0] in _KEX_REPLIES and len(payload) >= 5:
            blob_len = int.from_bytes(payload[1:5], "big")
            blob = payload[5:5 + blob_len]
            if len(blob) == blob_len and len(blob) >= 4:
                name_len = int.from_bytes(blob[:4], "big")
                name = blob[4:4 + name_len]
                if 0 < name_len <= 64 and name.startswith((b"ssh-", b"ecdsa-", b"sk-", b"rsa-")):
                    return blob
        pos += 4 + plen
    return None


def _derive(flow_id: int, c: SshSide, s: SshSide) -> SshHandshake:
    out = SshHandshake(flow_id=flow_id)
    out.client_banner, out.server_banner = c.banner, s.banner
    out.version = protocol_version(c.banner, s.banner)
    errors = [f"{who}: {side.error}" for who, side in (("client", c), ("server", s)) if side.error]
    if errors:
        out.partial, out.parse_error = True, "; ".join(errors)
    if c.kexinit:
        out.hassh, out.hassh_algorithms = _hassh(c.kexinit, "c2s")
    if s.kexinit:
        out.hassh_server, out.hassh_server_algorithms = _hassh(s.kexinit, "s2c")
    if c.kexinit and s.kexinit:
        ck, sk = c.kexinit, s.kexinit
        out.kex = _negotiate(ck.get("kex", []), sk.get("kex", []))
        out.host_key_alg = _negotiate(ck.get("host_key", []), sk.get("host_key", []))
        out.cipher_c2s = _negotiate(ck.get("enc_c2s", []), sk.get("enc_c2s", []))
        out.cipher_s2c = _negotiate(ck.get("enc_s2c", []), sk.get("enc_s2c", []))
        # negotiated even with AEAD ciphers, where the MAC goes unused (as Zeek reports it)
        out.mac_c2s = _negotiate(ck.get("mac_c2s", []), sk.get("mac_c2s", []))
        out.mac_s2c = _negotiate(ck.get("mac_s2c", []), sk.get("mac_s2c", []))
        chosen = [("kex", out.kex), ("host_key", out.host_key_alg), ("enc", out.cipher_c2s),
                  ("enc", out.cipher_s2c), ("mac", out.mac_c2s), ("mac", out.mac_s2c)]
        for kind, alg in chosen:
            tag = f"{kind}:{alg}"
            if _weak(kind, alg) and tag not in out.weak_algorithms:
                out.weak_algorithms.append(tag)
    elif s.kexinit:
        # nothing negotiated in view: flag what the server is willing to use
        for kind, key in (("kex", "kex"), ("host_key", "host_key"), ("enc", "enc_s2c"), ("mac", "mac_s2c")):
            for alg in s.kexinit.get(key, []):
                if _weak(kind, alg):
                    out.weak_algorithms.append(f"offered-{kind}:{alg}")
    if out.version == 1:
        out.weak_algorithms.append("protocol:SSH-1")
    return out


_FIELDS = [f for f in SshHandshake.__dataclass_fields__ if f not in ("flow_id", "host_key_fingerprint")]
