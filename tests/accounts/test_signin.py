"""Email + password sign-in: one answer for every wrong combination, failures counted (and kept although the
request rolls back), and refused before any hashing once the limit is reached."""

from __future__ import annotations

import pytest
from accounts_support import PASSWORD, give_password
from argon2 import PasswordHasher
from sqlalchemy import select

from ihub.accounts import service as accounts
from ihub.accounts.models import UserPassword
from ihub.common.errors import ApiError
from ihub.ratelimit.models import RateLimitCounter

pytestmark = pytest.mark.anyio


async def sign_in(work, settings, email: str, password: str, address: str = "10.0.0.1") -> int:
    return await work(lambda s: accounts.sign_in(s, settings, email, password, address))


async def refusal(work, settings, email: str, password: str, address: str = "10.0.0.1") -> ApiError:
    with pytest.raises(ApiError) as refused:
        await sign_in(work, settings, email, password, address)
    return refused.value


def answer(error: ApiError) -> tuple[int, str, str, dict[str, str]]:
    return error.status, error.code, error.message, error.headers


async def test_the_right_password_signs_in_whatever_the_email_case(work, settings, people):
    user_id = people.member_a.user_id
    await give_password(work, settings, user_id)
    assert await sign_in(work, settings, "member-a@example.com", PASSWORD) == user_id
    assert await sign_in(work, settings, "  Member-A@Example.COM ", PASSWORD) == user_id


async def test_every_wrong_combination_gets_the_same_answer(work, settings, people):
    await give_password(work, settings, people.member_a.user_id)
    wrong_password = await refusal(work, settings, "member-a@example.com", "not the password")
    unknown_email = await refusal(work, settings, "nobody@example.com", PASSWORD)
    no_password_yet = await refusal(work, settings, "admin-a@example.com", PASSWORD)
    assert answer(wrong_password) == (401, "invalid_credentials", "wrong email or password", {})
    assert answer(unknown_email) == answer(wrong_password) == answer(no_password_yet)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"token_failures_per_user_and_client": 3, "token_failures_per_client": 50, "token_failure_window_seconds": 600}],
)
async def test_failures_are_counted_although_the_request_rolls_back(app, work, settings, people):
    await give_password(work, settings, people.member_a.user_id)
    for _ in range(3):
        # Each attempt runs in its own unit of work, which rolls back on the 401.
        assert (await refusal(work, settings, "member-a@example.com", "guess")).status == 401

    async def counters(session):
        rows = await session.execute(select(RateLimitCounter.key, RateLimitCounter.count))
        return dict(rows.all())

    async with app.state.context.sessions() as fresh:
        stored = await counters(fresh)
    assert stored["signin-fail:pair:member-a@example.com:10.0.0.1"] == 3
    assert stored["signin-fail:client:10.0.0.1"] == 3
    assert stored["signin-fail:subject:member-a@example.com"] == 3
    assert not any(key.startswith("token-fail") for key in stored)  # counted apart from /api/v1/token

    # Refused before the password is even looked at: the right one too, with how long to wait.
    limited = await refusal(work, settings, "member-a@example.com", PASSWORD)
    assert (limited.status, limited.code) == (429, "too_many_requests")
    assert 0 < int(limited.headers["Retry-After"]) <= 600
    assert limited.headers["Retry-After"] in limited.message
    # Another address is not slowed down by this one's failures.
    assert await sign_in(work, settings, "member-a@example.com", PASSWORD, "10.0.0.2") == people.member_a.user_id


@pytest.mark.parametrize("settings_overrides", [{"token_failures_per_client": 2, "token_failure_window_seconds": 600}])
async def test_one_address_guessing_many_emails_is_limited(work, settings, people):
    for email in ("a@example.com", "b@example.com"):
        assert (await refusal(work, settings, email, "guess")).status == 401
    assert (await refusal(work, settings, "c@example.com", "guess")).status == 429


async def test_a_hash_with_weaker_parameters_is_replaced_at_sign_in(work, settings, people):
    user_id = people.member_a.user_id
    await give_password(work, settings, user_id)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)

    async def store_weak(session):
        stored = await session.get(UserPassword, user_id)
        stored.hash = weak

    await work(store_weak)
    assert await sign_in(work, settings, "member-a@example.com", PASSWORD) == user_id
    rehashed = await work(lambda s: s.scalar(select(UserPassword.hash).where(UserPassword.user_id == user_id)))
    assert rehashed != weak and "m=65536,t=3,p=4" in rehashed
    assert await sign_in(work, settings, "member-a@example.com", PASSWORD) == user_id
