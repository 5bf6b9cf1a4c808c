"""Secrets at rest: AES-256-GCM with per-purpose keys derived from IHUB_SECRET_KEY by HKDF."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"


def derive_key(master: str, purpose: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"ihub", info=purpose.encode()).derive(master.encode())


class SecretBox:
    """Encrypts small secrets; `context` (e.g. "user-key:7") is bound as associated data so a
    ciphertext copied onto another row does not decrypt there."""

    def __init__(self, master: str) -> None:
        self._aead = AESGCM(derive_key(master, "ihub/secrets-at-rest/v1"))

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> str:
        version, _, body = token.partition(":")
        if version != _VERSION:
            raise ValueError("unknown secret format")
        raw = base64.urlsafe_b64decode(body.encode())
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise ValueError("secret cannot be decrypted with this IHUB_SECRET_KEY") from None


def sha256_hex(value: str | bytes) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
