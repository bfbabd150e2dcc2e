"""TLS 1.3 handshake decryption with an NSS key log (SSLKEYLOGFILE), using ``cryptography``."""

from __future__ import annotations

import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ..errors import InputError
from ._tls_wire import CONTENT_ALERT, CONTENT_HANDSHAKE, HS_FINISHED

MAX_KEYLOG_BYTES = 256 * 1024 * 1024
MAX_DECRYPT_RECORDS = 32
MAX_SKIPPED_RECORDS = 8          # records that do not open with the handshake key (0-RTT data)

#: cipher suite -> (AEAD class, key length, hash)
TLS13_SUITES = {
    0x1301: (AESGCM, 16, hashes.SHA256),
    0x1302: (AESGCM, 32, hashes.SHA384),
    0x1303: (ChaCha20Poly1305, 32, hashes.SHA256),
    0x1304: (AESCCM, 16, hashes.SHA256),
}

WANTED = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET")


def load_keylog(path, warnings: list[str] | None = None) -> dict[bytes, dict[str, bytes]]:
    """client_random -> {label: secret} from an NSS key log; raises InputError naming the file when no
    line is usable. Malformed lines are skipped, and said in one line appended to ``warnings``."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_KEYLOG_BYTES:
            raise InputError(p, f"key log larger than {MAX_KEYLOG_BYTES >> 20} MiB")
        text = p.read_text("ascii", errors="replace")
    except OSError as exc:
        raise InputError(p, f"cannot read key log: {exc.strerror or exc}") from None
    keys: dict[bytes, dict[str, bytes]] = {}
    lines = 0
    bad: list[str] = []      # a key log appended to by several programs may hold garbage: skipped, said once
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            bad.append(f"line {lineno}: not 'LABEL CLIENT_RANDOM SECRET'")
            continue
        label, rnd, secret = parts
        try:
            rnd_b, secret_b = bytes.fromhex(rnd), bytes.fromhex(secret)
        except ValueError:
            bad.append(f"line {lineno}: client random or secret is not hex")
            continue
        lines += 1
        if label in WANTED:
            keys.setdefault(rnd_b, {})[label] = secret_b
    if lines == 0:
        raise InputError(p, bad[0] if bad else "no key log lines (NSS SSLKEYLOGFILE format expected)")
    if bad and warnings is not None:
        warnings.append(f"{p}: {len(bad)} key log line(s) skipped ({bad[0]}); the other {lines} were used")
    return keys


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_cls) -> bytes:
    full = b"tls13 " + label.encode()
    info = struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(hash_cls(), length, info).derive(secret)


def decrypt_flight(records, secret: bytes, cipher_id: int) -> tuple[bytes, list[str], str | None]:
    """Decrypt the handshake-key records of one direction.

    Returns the handshake bytes (up to and including Finished), alerts found, and an error text.
    """
    suite = TLS13_SUITES.get(cipher_id)
    if suite is None:
        return b"", [], f"cipher 0x{cipher_id:04x} not supported for decryption"
    aead_cls, key_len, hash_cls = suite
    key = hkdf_expand_label(secret, "key", b"", key_len, hash_cls)
    iv = hkdf_expand_label(secret, "iv", b"", 12, hash_cls)
    aead = aead_cls(key)
    out = bytearray()
    alerts: list[str] = []
    seq = skipped = 0
    for rec in records[:MAX_DECRYPT_RECORDS]:
        nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
        try:
            plain = aead.decrypt(nonce, rec.body, rec.header)
        except Exception:        # noqa: BLE001 - wrong key: 0-RTT data, or a broken record
            if not rec.complete:
                return bytes(out), alerts, "encrypted record truncated"
            skipped += 1
            if skipped > MAX_SKIPPED_RECORDS or seq > 0:
                return bytes(out), alerts, "record does not decrypt with the logged secret"
            continue
        seq += 1
        inner = plain.rstrip(b"\0")
        if not inner:
            continue
        ctype, content = inner[-1], inner[:-1]
        if ctype == CONTENT_ALERT and len(content) == 2:
            alerts.append(f"{content[0]}:{content[1]}")
            break
        if ctype == CONTENT_HANDSHAKE:
            out += content
            if _has_finished(bytes(out)):
                break
    return bytes(out), alerts, None


def _has_finished(data: bytes) -> bool:
    pos = 0
    while pos + 4 <= len(data):
        mlen = int.from_bytes(data[pos + 1:pos + 4], "big")
        if pos + 4 + mlen > len(data):
            return False
        if data[pos] == HS_FINISHED:
            return True
        pos += 4 + mlen
    return False


def split_messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of the complete handshake messages in ``data``."""
    out = []
    pos = 0
    while pos + 4 <= len(data) and len(out) < 64:
        mlen = int.from_bytes(data[pos + 1:pos + 4], "big")
        if pos + 4 + mlen > len(data):
            break
        out.append((data[pos], data[pos + 4:pos + 4 + mlen]))
        pos += 4 + mlen
    return out
