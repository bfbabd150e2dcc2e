"""Fingerprints users search by: JA3, JA3S, JA4S, the key-exchange group's name and the SSH host key's."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from ._tls_wire import EXT_KEY_SHARE, is_grease

#: TLS supported groups (IANA "TLS Supported Groups"), as OpenSSL and Wireshark name them.
GROUP_NAMES = {
    1: "sect163k1", 2: "sect163r1", 3: "sect163r2", 4: "sect193r1", 5: "sect193r2", 6: "sect233k1",
    7: "sect233r1", 8: "sect239k1", 9: "sect283k1", 10: "sect283r1", 11: "sect409k1", 12: "sect409r1",
    13: "sect571k1", 14: "sect571r1", 15: "secp160k1", 16: "secp160r1", 17: "secp160r2", 18: "secp192k1",
    19: "secp192r1", 20: "secp224k1", 21: "secp224r1", 22: "secp256k1", 23: "secp256r1", 24: "secp384r1",
    25: "secp521r1", 26: "brainpoolP256r1", 27: "brainpoolP384r1", 28: "brainpoolP512r1", 29: "x25519",
    30: "x448", 31: "brainpoolP256r1tls13", 32: "brainpoolP384r1tls13", 33: "brainpoolP512r1tls13",
    34: "GC256A", 35: "GC256B", 36: "GC256C", 37: "GC256D", 38: "GC512A", 39: "GC512B", 40: "GC512C",
    41: "curveSM2", 256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096", 259: "ffdhe6144", 260: "ffdhe8192",
    512: "MLKEM512", 513: "MLKEM768", 514: "MLKEM1024", 4587: "SecP256r1MLKEM768", 4588: "X25519MLKEM768",
    4589: "SecP384r1MLKEM1024", 25497: "X25519Kyber768Draft00", 25498: "SecP256r1Kyber768Draft00",
    65281: "arbitrary_explicit_prime_curves", 65282: "arbitrary_explicit_char2_curves",
}
#: ServerKeyExchange curve_type of a named curve (RFC 8422 5.4).
NAMED_CURVE = 3
#: The encrypted_client_hello extension (RFC 9849).
EXT_ECH = 0xFE0D
#: Protocol versions as JA4 and JA4S write them.
JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                0x0002: "s2", 0x0200: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def group_name(group: int | None) -> str | None:
    """The name of a supported group (``0x….`` when unassigned); None for None."""
    if group is None:
        return None
    return GROUP_NAMES.get(group) or f"0x{group:04X}"


@lru_cache(maxsize=4096)
def ja3(version: int, ciphers: tuple[int, ...], extensions: tuple[int, ...], groups: tuple[int, ...],
        point_formats: tuple[int, ...]) -> str:
    """JA3 (Salesforce): MD5 of "version,ciphers,extensions,groups,point formats", decimal values
    joined by "-", GREASE values left out."""
    fields = [str(version)] + ["-".join(str(v) for v in values if not is_grease(v))
                               for values in (ciphers, extensions, groups)]
    fields.append("-".join(map(str, point_formats)))
    return hashlib.md5(",".join(fields).encode(), usedforsecurity=False).hexdigest()


@lru_cache(maxsize=4096)
def ja3s(version: int, cipher: int, extensions: tuple[int, ...]) -> str:
    """JA3S: MD5 of "version,cipher,extensions" of the ServerHello (GREASE left out)."""
    text = f"{version},{cipher},{'-'.join(str(e) for e in extensions if not is_grease(e))}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@lru_cache(maxsize=4096)
def ja4s(version: int, cipher: int, extensions: tuple[int, ...], alpn: bytes, transport: str = "t") -> str:
    """JA4S (FoxIO): transport, version, extension count and the selected ALPN's first and last
    characters; the cipher; the first 12 hex digits of SHA-256 over the extensions in their order."""
    top = 0x0304 if (version >> 8) == 0x7F else version
    head = f"{transport}{JA4_VERSIONS.get(top, '00')}{min(len(extensions), 99):02d}{_alpn_chars(alpn)}"
    text = ",".join(f"{e:04x}" for e in extensions)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"
    return f"{head}_{cipher:04x}_{digest}"


def _alpn_chars(alpn: bytes) -> str:
    """First and last characters of an ALPN value as JA4 takes them ("00" for none)."""
    if not alpn:
        return "00"
    first, last = chr(alpn[0]), chr(alpn[-1])
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    h = alpn.hex()
    return h[0] + h[-1]


def server_extensions(entries: bytes) -> tuple[tuple[int, ...], int | None]:
    """Extension types of a ServerHello (its well-formed entries, after the block's length) in order,
    and the group of its key_share, if any."""
    types = []
    group = None
    p, n = 0, len(entries)
    while p + 4 <= n:
        etype = (entries[p] << 8) | entries[p + 1]
        length = (entries[p + 2] << 8) | entries[p + 3]
        types.append(etype)
        if etype == EXT_KEY_SHARE and length >= 2 and group is None:
            group = (entries[p + 4] << 8) | entries[p + 5]
        p += 4 + length
    return tuple(types), group


def key_exchange_curve(server_key_exchange: bytes) -> int | None:
    """The named curve of an ECDHE ServerKeyExchange (TLS <= 1.2); None for other key exchanges."""
    if len(server_key_exchange) >= 3 and server_key_exchange[0] == NAMED_CURVE:
        return (server_key_exchange[1] << 8) | server_key_exchange[2]
    return None


def ssh_host_key_fingerprint(blob: bytes) -> str:
    """The host key's fingerprint as OpenSSH prints it: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
