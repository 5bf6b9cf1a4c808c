"""SHA-256 length extension against `hash = sha256(secret + nonce)`.

Anyone who sees one (nonce, hash) pair can compute sha256(secret + nonce + padding + extra) without the
secret. The hub stops this with the nonce alphabet: the padding needs bytes 0x80 and 0x00, which a nonce
of [A-Za-z0-9._~:-] cannot hold. The test builds a real forgery (checked against hashlib) and sends it.
"""

from __future__ import annotations

import hashlib
import math
import struct
import urllib.parse
import uuid

import pytest

pytestmark = pytest.mark.anyio

MASK = 0xFFFFFFFF


def _primes(count: int) -> list[int]:
    found: list[int] = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return found


def _icbrt(n: int) -> int:
    """Largest x with x**3 <= n (Newton on integers, so the constants are exact)."""
    x = 1 << ((n.bit_length() + 2) // 3)
    while True:
        y = (2 * x + n // (x * x)) // 3
        if y >= x:
            break
        x = y
    while x**3 > n:
        x -= 1
    while (x + 1) ** 3 <= n:
        x += 1
    return x


# FIPS 180-4 §4.2.2 and §5.3.3: fractional bits of the cube and square roots of the first primes.
K = [_icbrt(p << 96) & MASK for p in _primes(64)]
H0 = [math.isqrt(p << 64) & MASK for p in _primes(8)]


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


def compress(state: list[int], block: bytes) -> list[int]:
    """One SHA-256 compression of a 64-byte block (FIPS 180-4 §6.2.2)."""
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & MASK)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]) & MASK
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & MASK
        a, b, c, d, e, f, g, h = (t1 + t2) & MASK, a, b, c, (d + t1) & MASK, e, f, g
    return [(x + y) & MASK for x, y in zip(state, [a, b, c, d, e, f, g, h], strict=True)]


def padding(message_length: int) -> bytes:
    """The bytes SHA-256 appends to a message of this many bytes."""
    zeros = (55 - message_length) % 64
    return b"\x80" + b"\x00" * zeros + struct.pack(">Q", message_length * 8)


def sha256(data: bytes, state: list[int] | None = None, already_hashed: int = 0) -> str:
    """SHA-256 of `data`, optionally continuing from a state after `already_hashed` bytes."""
    message = data + padding(already_hashed + len(data))
    state = list(state or H0)
    for offset in range(0, len(message), 64):
        state = compress(state, message[offset : offset + 64])
    return "".join(f"{word:08x}" for word in state)


def extend(known_hash: str, known_length: int, extra: bytes) -> tuple[bytes, str]:
    """(glue, forged hash) such that sha256(original + glue + extra) == forged hash, without the original."""
    glue = padding(known_length)
    state = list(struct.unpack(">8I", bytes.fromhex(known_hash)))
    return glue, sha256(extra, state, known_length + len(glue))


def test_pure_sha256_matches_hashlib():
    for data in (b"", b"abc", b"x" * 55, b"y" * 56, b"z" * 64, bytes(range(256)) * 3):
        assert sha256(data) == hashlib.sha256(data).hexdigest()


def test_forgery_is_real():
    secret, nonce, extra = b"s3cr3t-value", b"nonce-12345678", b":admin"
    known = hashlib.sha256(secret + nonce).hexdigest()
    glue, forged = extend(known, len(secret + nonce), extra)
    assert hashlib.sha256(secret + nonce + glue + extra).hexdigest() == forged


async def _observed_exchange(client, owner):  # noqa: ANN001, ANN202
    """A legitimate exchange an attacker could have observed: (nonce, hash)."""
    nonce = str(uuid.uuid1())
    hash_hex = hashlib.sha256((owner.secret + nonce).encode()).hexdigest()
    response = await client.post("/api/v1/token", json={"userId": owner.user_id, "nonce": nonce, "hash": hash_hex})
    assert response.status_code == 200
    return nonce, hash_hex


async def test_length_extended_hash_is_refused_as_json(client, owner):
    nonce, hash_hex = await _observed_exchange(client, owner)
    known_length = len((owner.secret + nonce).encode())
    glue, forged = extend(hash_hex, known_length, b"-again")
    forged_nonce = nonce.encode() + glue + b"-again"
    # The forgery is valid for the bytes secret + forged_nonce: only the nonce alphabet stands in the way.
    assert hashlib.sha256(owner.secret.encode() + forged_nonce).hexdigest() == forged
    assert b"\x80" in forged_nonce and b"\x00" in forged_nonce

    response = await client.post(
        "/api/v1/token", json={"userId": owner.user_id, "nonce": forged_nonce.decode("latin-1"), "hash": forged}
    )
    assert response.status_code == 400, response.text
    metadata = response.json()["metadata"]
    assert metadata["code"] == "validation_error"
    assert "nonce" in metadata["message"]


async def test_length_extended_hash_is_refused_as_form(client, owner):
    nonce, hash_hex = await _observed_exchange(client, owner)
    glue, forged = extend(hash_hex, len((owner.secret + nonce).encode()), b"x")
    body = urllib.parse.urlencode({"userId": owner.user_id, "nonce": nonce.encode() + glue + b"x", "hash": forged})
    response = await client.post(
        "/api/v1/token", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400, response.text
    assert "nonce" in response.json()["metadata"]["message"]
