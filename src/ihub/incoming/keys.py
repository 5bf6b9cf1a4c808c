"""Client public keys: generation, PEM/JWK import, and the one algorithm each key may verify.

RFC 8725 §3.1: the algorithm comes from the key, never from the token. An RSA key verifies RS256
(or PS256 when registered for it), an EC P-256 key verifies ES256; nothing verifies `none` or HS*.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

PublicKey = RSAKey | ECKey

MIN_RSA_BITS = 2048
RSA_ALGS = ("RS256", "PS256")
EC_ALGS = {"P-256": "ES256"}


class UnusableKey(ValueError):
    """A key a client sent that ihub will not use; the message says why."""


@dataclass(frozen=True)
class GeneratedKey:
    private_pem: str
    public_jwk: dict[str, Any]
    kid: str
    alg: str


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: a kid the client can recompute from the public key alone."""
    return import_public_jwk(jwk).thumbprint()


def import_public_jwk(jwk: dict[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if kty == "RSA":
        return RSAKey.import_key({k: v for k, v in jwk.items() if k in ("kty", "n", "e")})
    if kty == "EC":
        return ECKey.import_key({k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")})
    raise UnusableKey(f"key type {kty!r} is not supported: use RSA (2048 bits or more) or EC P-256")


def algorithm_for(jwk: dict[str, Any], requested: str | None = None) -> str:
    """The single algorithm a key verifies; `requested` (a JWK's or the creator's `alg`) may pick PS256."""
    kty = jwk.get("kty")
    if kty == "RSA":
        if requested in (None, "", "RS256"):
            return "RS256"
        if requested == "PS256":
            return "PS256"
        raise UnusableKey(f"algorithm {requested!r} is not allowed for an RSA key: use RS256 or PS256")
    if kty == "EC":
        alg = EC_ALGS.get(str(jwk.get("crv")))
        if alg is None:
            raise UnusableKey(f"EC curve {jwk.get('crv')!r} is not supported: use P-256 (ES256)")
        if requested not in (None, "", alg):
            raise UnusableKey(f"algorithm {requested!r} is not allowed for an EC {jwk.get('crv')} key: use {alg}")
        return alg
    raise UnusableKey(f"key type {kty!r} is not supported: use RSA (2048 bits or more) or EC P-256")


def _check_strength(jwk: dict[str, Any]) -> None:
    if jwk.get("kty") == "RSA":
        modulus = str(jwk.get("n", ""))
        try:
            bits = int.from_bytes(base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))).bit_length()
        except ValueError:
            raise UnusableKey("RSA key modulus is not base64url") from None
        if bits < MIN_RSA_BITS:
            raise UnusableKey(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")


def public_jwk_from_pem(pem: str) -> dict[str, Any]:
    """The public JWK of a PEM public key (SubjectPublicKeyInfo or PKCS#1). Private keys are refused."""
    data = pem.strip().encode()
    if b"PRIVATE KEY" in data:
        raise UnusableKey("this is a private key: upload only the public key (keep the private key yourself)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise UnusableKey("publicKey is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        jwk = RSAKey.import_key(key).as_dict(private=False)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise UnusableKey(f"EC curve {key.curve.name} is not supported: use P-256 (ES256)")
        jwk = ECKey.import_key(key).as_dict(private=False)
    else:
        raise UnusableKey("unsupported key type: use RSA (2048 bits or more) or EC P-256")
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    _check_strength(jwk)
    return jwk


def usable_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """A JWK from a client's JWKS, checked and reduced to its public members."""
    if any(member in jwk for member in ("d", "p", "q", "k")):
        raise UnusableKey("JWKS entry holds private or symmetric key material")
    public = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    algorithm_for(public, jwk.get("alg"))
    _check_strength(public)
    import_public_jwk(public)
    return public


def generate_rsa() -> GeneratedKey:
    """A fresh RSA-2048 pair; the caller hands out the private PEM once and keeps only the public JWK."""
    key = RSAKey.generate_key(2048)
    private_pem = key.as_pem(private=True).decode()
    public = {k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "n", "e")}
    return GeneratedKey(private_pem=private_pem, public_jwk=public, kid=thumbprint(public), alg="RS256")
