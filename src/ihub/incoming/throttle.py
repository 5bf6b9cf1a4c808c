"""Failed `/incoming/token` requests are limited per client id (`iss`) and per address, in the database so
every API node counts together. The same three counters as the `/api/v1/token` login (see
`ratelimit.FailureLimits`): a stranger sending junk assertions in a client's name cannot lock the client out.

The `iss` is read from the assertion without verifying it (verification is what is being limited); a forged
`iss` only spends the forger's own per-address budget and the named client's pair with that address.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError
from ihub.config import Settings
from ihub.ratelimit import service as ratelimit

# Client ids are short; a longer `iss` names no client and is counted under one bucket.
MAX_ISS = 64


def claimed_issuer(form: Any) -> str:
    """The `iss` an assertion claims (unverified), or "-" when there is none to read."""
    assertion = form.get("assertion") if isinstance(form, dict) else None
    if not isinstance(assertion, str) or assertion.count(".") != 2:
        return "-"
    segment = assertion.split(".")[1][:8192]
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):
        return "-"
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and 0 < len(iss) <= MAX_ISS else "-"


def failure_limits(settings: Settings, iss: str, address: str) -> ratelimit.FailureLimits:
    return ratelimit.failure_limits(
        "incoming-token-fail",
        iss,
        address,
        per_pair=settings.incoming_token_failures_per_client_and_address,
        per_address=settings.incoming_token_failures_per_address,
        per_subject=settings.incoming_token_failures_per_client,
        window=settings.token_failure_window_seconds,
    )


async def refuse_if_limited(
    session: AsyncSession, limits: ratelimit.FailureLimits, clean: ratelimit.CleanAddresses
) -> None:
    if clean.is_clean(limits.address):
        return
    assessment = await limits.assess(session)
    await session.rollback()
    if assessment.address_clean:
        clean.mark_clean(limits.address)
    wait = assessment.wait
    if wait is not None:
        # RFC 6749 §5.2 allows extension error codes; RFC 6585 §4 gives 429 and Retry-After.
        raise ApiError(
            429, f"too many failed token requests; retry in {wait} s", "slow_down", headers={"Retry-After": str(wait)}
        )


async def count_failure(
    session: AsyncSession, limits: ratelimit.FailureLimits, clean: ratelimit.CleanAddresses
) -> None:
    clean.forget(limits.address)
    await session.rollback()
    await limits.record(session)
    await session.commit()
