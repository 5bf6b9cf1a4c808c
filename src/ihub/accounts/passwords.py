"""Console passwords: argon2id hashes, the policy a new password must meet, and hashing off the event loop."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from functools import cache
from typing import NamedTuple, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ihub.common.errors import ApiError
from ihub.config import Settings

# argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, t=3, 64 MiB, p=4): the RFC's choice
# where 2 GiB per hash is not affordable, which a hub serving API traffic on a small machine is. The parameters are
# stored in every hash, so raising them later rehashes each password at its next sign-in (`verify_password`).
_hasher = PasswordHasher()

MAX_PASSWORD_LENGTH = 1024

# Each hash holds 64 MiB for ~50 ms: at most this many at a time, so a burst of sign-ins (the rate limit counts
# per address) cannot take the hub's memory; the rest wait their turn in a worker thread.
_HASHING_SLOTS = threading.BoundedSemaphore(4)

T = TypeVar("T")


class Verification(NamedTuple):
    matches: bool
    # A new hash of the same password when the stored one used weaker parameters than today's; store it.
    rehashed: str | None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> Verification:
    try:
        _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return Verification(matches=False, rehashed=None)
    rehashed = _hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None
    return Verification(matches=True, rehashed=rehashed)


@cache
def decoy_hash() -> str:
    """A hash no password matches, verified instead when there is no real one, so that an unknown email costs
    the same as a wrong password and the answer time tells nothing."""
    return hash_password(secrets.token_urlsafe(32))


def check_password_policy(settings: Settings, password: str, email: str) -> None:
    """Raise a 400 `weak_password` a user can act on; nothing is stored by the caller when it does."""
    if len(password) < settings.password_min_length:
        raise _weak(f"the password must have at least {settings.password_min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        # Argon2 takes any length, but every byte is hashed per attempt: a bound keeps a guess cheap to refuse.
        raise _weak(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip().lower() == email.strip().lower():
        raise _weak("the password must not be your email address")


def _weak(message: str) -> ApiError:
    return ApiError(400, message, "weak_password")


def _one_slot(work: Callable[[], T]) -> T:
    with _HASHING_SLOTS:
        return work()


async def hash_off_loop(password: str) -> str:
    """`hash_password` in a worker thread: ~50 ms of CPU would otherwise stall every request of the process."""
    return await asyncio.to_thread(_one_slot, lambda: hash_password(password))


async def verify_off_loop(stored_hash: str, password: str) -> Verification:
    return await asyncio.to_thread(_one_slot, lambda: verify_password(stored_hash, password))


async def decoy_off_loop(password: str) -> None:
    await asyncio.to_thread(_one_slot, lambda: verify_password(decoy_hash(), password))
