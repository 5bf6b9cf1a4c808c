"""RFC 7636, Proof Key for Code Exchange: the verifier ihub keeps and the S256 challenge it sends."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

# §4.1: code_verifier = 43*128unreserved, unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_verifier() -> str:
    """§4.1: high-entropy; 64 random bytes in base64url are 86 characters of the unreserved set."""
    return secrets.token_urlsafe(64)


def is_valid_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


def s256_challenge(verifier: str) -> str:
    """§4.2: code_challenge = BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), without padding (Appendix A)."""
    if not is_valid_verifier(verifier):
        raise ValueError("a PKCE verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
