"""The C SHA-256 of many messages (decode/_c/sha256.c) against hashlib, and the findings' fingerprints made with it."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from commpath.check.findings import _digests, fingerprint
from commpath.decode._native import openssl_sha256, sha256_prefixes


def _pack(messages: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in messages])]).astype(np.int64)
    return np.frombuffer(b"".join(messages), np.uint8).copy(), offsets


def test_every_padding_boundary_and_random_messages_hash_as_hashlib():
    rng = random.Random(7)
    # lengths around the one- and two-block paddings (55/56, 63/64, 119/120) and long messages
    lengths = list(range(0, 200)) + [447, 448, 1000, 4096, 65537] + [rng.randrange(0, 3000) for _ in range(300)]
    messages = [rng.randbytes(n) for n in lengths]
    data, offsets = _pack(messages)
    for openssl in (True, False):
        for keep in (32, 16, 1):
            got = sha256_prefixes(data, offsets, keep, openssl=openssl).reshape(-1, keep)
            assert [bytes(row) for row in got] == [hashlib.sha256(m).digest()[:keep] for m in messages]


def test_openssl_is_found_here():
    # Python's hashlib links libcrypto on this machine: the fast path must be the one taken
    assert openssl_sha256() is not None


def test_no_messages_and_only_empty_messages():
    assert len(sha256_prefixes(np.zeros(0, np.uint8), np.zeros(1, np.int64), 16)) == 0
    for openssl in (True, False):
        got = sha256_prefixes(np.zeros(0, np.uint8), np.zeros(4, np.int64), 32, openssl=openssl).reshape(-1, 32)
        assert [bytes(r) for r in got] == [hashlib.sha256(b"").digest()] * 3


def test_offsets_outside_the_data_and_bad_sizes_are_refused():
    data = np.zeros(10, np.uint8)
    with pytest.raises(ValueError):
        sha256_prefixes(data, np.array([0, 11], np.int64), 16)
    with pytest.raises(ValueError):
        sha256_prefixes(data, np.array([5, 3], np.int64), 16)
    with pytest.raises(ValueError):
        sha256_prefixes(data, np.array([0, 10], np.int64), 33)
    with pytest.raises(TypeError):      # the kernel trusts its arguments' types: checked before the call
        sha256_prefixes(data, np.array([0, 10], np.int32), 16)


def test_finding_digests_of_a_sliced_arrow_array_match_the_fingerprint_function():
    keys = [("unclassified-flow", "unclassified", f"10.0.{i // 256}.{i % 256}", "192.0.2.10", 6443 + i % 3)
            for i in range(1000)]
    texts = pa.array(["\x1f".join((c, p, a, b, str(port))) for c, p, a, b, port in keys], pa.large_string())
    messages = texts.cast(pa.large_binary()).slice(17, 900)       # an offset into shared buffers
    got = _digests(messages).reshape(-1, 16)
    assert [bytes(r).hex() for r in got] == [fingerprint(*k) for k in keys[17:917]]
