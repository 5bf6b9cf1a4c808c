"""Console sessions: who is behind a cookie, the idle and the absolute timeout (each by its setting's effect),
and every way a session ends (sign-out, sign-out elsewhere, password change, deleted user)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from accounts_support import PASSWORD, count_sessions, give_password, start

from ihub.accounts import service as accounts
from ihub.common.errors import ApiError
from ihub.db.base import utcnow
from ihub.tenancy import service as tenancy

pytestmark = pytest.mark.anyio


async def find(work, settings, token: str, now=None):
    return await work(lambda s: accounts.find_session(s, settings, token, now))


async def test_a_session_carries_its_principal(work, settings, people):
    member = people.member_a
    started = await work(
        lambda s: accounts.start_session(s, settings, member.user_id, "10.1.2.3", "Browser/1.0 " + "x" * 400)
    )
    assert started.token != started.csrf and len(started.token) >= 43
    assert timedelta(hours=11, minutes=59) < started.expires_at - utcnow() <= timedelta(hours=12)

    found = await find(work, settings, started.token)
    assert found is not None
    assert found.principal == member and found.user_id == member.user_id and found.id == started.id
    assert (found.name, found.email, found.csrf) == ("member-a", "member-a@example.com", started.csrf)
    assert found.csrf_matches(started.csrf) and not found.csrf_matches(started.csrf[:-1] + "!")
    assert not found.stale

    assert await find(work, settings, started.token + "x") is None
    assert await find(work, settings, started.csrf) is None  # the CSRF token is no cookie
    [info] = await work(lambda s: accounts.list_sessions(s, member.user_id))
    assert (info.id, info.address, len(info.user_agent)) == (started.id, "10.1.2.3", 300)


@pytest.mark.parametrize("settings_overrides", [{"console_session_idle_minutes": 5}])
async def test_an_idle_session_ends_and_a_touch_keeps_it(work, settings, people, accounts_clock):
    started = await start(work, settings, people.member_a.user_id)
    accounts_clock.advance(minutes=4)
    found = await find(work, settings, started.token, accounts_clock.now())
    assert found is not None and found.stale  # over a minute since last seen: the caller should touch it
    await work(lambda s: accounts.touch_session(s, started.id))
    accounts_clock.advance(minutes=4)  # 8 min after sign-in, 4 after the touch
    found = await find(work, settings, started.token, accounts_clock.now())
    assert found is not None
    accounts_clock.advance(minutes=2)  # 6 min unused
    assert await find(work, settings, started.token, accounts_clock.now()) is None


@pytest.mark.parametrize("settings_overrides", [{"console_session_max_hours": 1, "console_session_idle_minutes": 120}])
async def test_a_session_ends_at_its_absolute_end_however_active(work, settings, people, accounts_clock):
    started = await start(work, settings, people.member_a.user_id)
    for _ in range(2):
        accounts_clock.advance(minutes=29)
        await work(lambda s: accounts.touch_session(s, started.id))
        assert await find(work, settings, started.token, accounts_clock.now()) is not None
    accounts_clock.advance(minutes=3)  # 61 min after sign-in, 3 min after the last touch
    assert await find(work, settings, started.token, accounts_clock.now()) is None


async def test_deleting_the_user_ends_their_sessions(work, settings, people):
    member = people.member_a.user_id
    started = await start(work, settings, member)
    await work(lambda s: tenancy.delete_user(s, people.admin_a, member))
    assert await find(work, settings, started.token) is None
    assert await count_sessions(work, member) == 0  # the rows are gone (foreign key ON DELETE CASCADE)


async def test_sign_out_here_and_everywhere_else(work, settings, people):
    member = people.member_a.user_id
    one, two, three = [await start(work, settings, member) for _ in range(3)]
    other_user = await start(work, settings, people.admin_a.user_id)

    assert await work(lambda s: accounts.end_all_sessions(s, member, except_id=two.id)) == 2
    assert [info.id for info in await work(lambda s: accounts.list_sessions(s, member))] == [two.id]
    assert await find(work, settings, one.token) is None and await find(work, settings, three.token) is None
    assert await find(work, settings, other_user.token) is not None

    await work(lambda s: accounts.end_session(s, two.id))
    assert await find(work, settings, two.token) is None
    assert await work(lambda s: accounts.end_all_sessions(s, member)) == 0


async def test_change_password(work, settings, people):
    member = people.member_a.user_id
    await give_password(work, settings, member)
    here, elsewhere = await start(work, settings, member), await start(work, settings, member)

    with pytest.raises(ApiError) as wrong:
        await work(lambda s: accounts.change_password(s, settings, member, "not it", "a new password", here.id))
    assert (wrong.value.status, wrong.value.code) == (400, "wrong_password")
    assert await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", PASSWORD, "10.0.0.1")) == member
    assert await find(work, settings, elsewhere.token) is not None

    with pytest.raises(ApiError) as weak:
        await work(lambda s: accounts.change_password(s, settings, member, PASSWORD, "short", here.id))
    assert weak.value.code == "weak_password"

    await work(lambda s: accounts.change_password(s, settings, member, PASSWORD, "a new password", here.id))
    assert await find(work, settings, here.token) is not None
    assert await find(work, settings, elsewhere.token) is None
    assert await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", "a new password", "x")) == member
    with pytest.raises(ApiError):
        await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", PASSWORD, "10.0.0.1"))


async def test_change_password_without_one_is_a_wrong_password(work, settings, people):
    with pytest.raises(ApiError) as refused:
        await work(
            lambda s: accounts.change_password(s, settings, people.admin_a.user_id, PASSWORD, "a new password", None)
        )
    assert refused.value.code == "wrong_password"
