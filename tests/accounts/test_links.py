"""One-time sign-in links: single use (also under a race), a lifetime, only the newest works, a reset signs the
user out everywhere, and who may make one for whom."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from accounts_support import PASSWORD, count_links, count_sessions, give_password, start

from ihub.accounts import service as accounts
from ihub.accounts.service import LinkPurpose
from ihub.common.errors import ApiError

pytestmark = pytest.mark.anyio

INVITE, RESET = LinkPurpose.INVITE, LinkPurpose.RESET


def assert_invalid_link(error: ApiError) -> None:
    # One answer for unknown, used and expired links.
    assert (error.status, error.code, error.message) == (400, "invalid_link", accounts.INVALID_LINK)


async def test_an_invite_sets_the_password_once(work, settings, people):
    user_id = people.member_a.user_id
    link = await work(lambda s: accounts.create_link(s, settings, people.admin_a, user_id, INVITE))
    assert link.path() == f"/console/password/{link.token}" and len(link.token) >= 43
    assert accounts.link_url(settings, link) == f"http://testserver/console/password/{link.token}"
    assert link.email == "member-a@example.com" and link.purpose is INVITE

    target = await work(lambda s: accounts.peek_link(s, link.token))
    assert target == accounts.LinkTarget(user_id, "member-a@example.com", "member-a", INVITE)

    assert await work(lambda s: accounts.redeem_link(s, settings, link.token, PASSWORD)) == user_id
    assert await work(lambda s: accounts.has_password(s, [user_id, people.admin_a.user_id])) == {user_id}
    assert await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", PASSWORD, "10.0.0.1")) == user_id

    assert await work(lambda s: accounts.peek_link(s, link.token)) is None
    with pytest.raises(ApiError) as second:
        await work(lambda s: accounts.redeem_link(s, settings, link.token, "another password 2"))
    assert_invalid_link(second.value)
    # The second attempt changed nothing.
    assert await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", PASSWORD, "10.0.0.1")) == user_id


async def test_two_redeems_of_one_link_at_once_only_one_wins(work, settings, people):
    user_id = people.member_a.user_id
    link = await work(lambda s: accounts.create_link(s, settings, None, user_id, INVITE))
    outcomes: dict[str, object] = {}

    async def redeem(password: str) -> None:
        try:
            outcomes[password] = await work(lambda s: accounts.redeem_link(s, settings, link.token, password))
        except ApiError as error:
            outcomes[password] = error.code

    async with anyio.create_task_group() as group:
        for password in ("first racer pw", "second racer pw"):
            group.start_soon(redeem, password)
    assert sorted(map(str, outcomes.values())) == sorted([str(user_id), "invalid_link"]), outcomes
    winner = next(password for password, outcome in outcomes.items() if outcome == user_id)
    loser = next(password for password in outcomes if password != winner)
    assert await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", winner, "10.0.0.1")) == user_id
    with pytest.raises(ApiError):
        await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", loser, "10.0.0.1"))


@pytest.mark.parametrize("settings_overrides", [{"signin_link_ttl_hours": 2}])
async def test_a_link_works_for_its_lifetime_only(work, settings, people, accounts_clock):
    link = await work(lambda s: accounts.create_link(s, settings, None, people.member_a.user_id, INVITE))
    assert timedelta(hours=2) - timedelta(seconds=5) < link.expires_at - accounts_clock.now() <= timedelta(hours=2)

    accounts_clock.advance(hours=1, minutes=59)
    assert await work(lambda s: accounts.peek_link(s, link.token)) is not None
    accounts_clock.advance(minutes=2)
    assert await work(lambda s: accounts.peek_link(s, link.token)) is None
    with pytest.raises(ApiError) as expired:
        await work(lambda s: accounts.redeem_link(s, settings, link.token, PASSWORD))
    assert_invalid_link(expired.value)
    assert await work(lambda s: accounts.has_password(s, [people.member_a.user_id])) == set()


async def test_unknown_links_answer_like_used_ones(work, settings, people):
    assert await work(lambda s: accounts.peek_link(s, "no-such-token")) is None
    with pytest.raises(ApiError) as unknown:
        await work(lambda s: accounts.redeem_link(s, settings, "no-such-token", PASSWORD))
    assert_invalid_link(unknown.value)


async def test_only_the_newest_link_works(work, settings, people):
    user_id = people.member_a.user_id
    older = await work(lambda s: accounts.create_link(s, settings, people.admin_a, user_id, INVITE))
    newer = await work(lambda s: accounts.create_link(s, settings, people.owner_a, user_id, INVITE))
    assert await work(lambda s: accounts.peek_link(s, older.token)) is None
    with pytest.raises(ApiError):
        await work(lambda s: accounts.redeem_link(s, settings, older.token, PASSWORD))
    assert await work(lambda s: accounts.redeem_link(s, settings, newer.token, PASSWORD)) == user_id


async def test_a_reset_removes_the_password_and_ends_every_session(work, settings, people):
    user_id = people.member_a.user_id
    await give_password(work, settings, user_id)
    cookies = [await start(work, settings, user_id) for _ in range(2)]
    other = await start(work, settings, people.admin_a.user_id)

    link = await work(lambda s: accounts.create_link(s, settings, people.admin_a, user_id, RESET))
    assert link.purpose is RESET

    assert await work(lambda s: accounts.has_password(s, [user_id])) == set()
    for cookie in cookies:
        assert await work(lambda s, c=cookie: accounts.find_session(s, settings, c.token)) is None
    assert await count_sessions(work, user_id) == 0
    # Someone else's session is not touched.
    assert await work(lambda s: accounts.find_session(s, settings, other.token)) is not None
    with pytest.raises(ApiError) as refused:
        await work(lambda s: accounts.sign_in(s, settings, "member-a@example.com", PASSWORD, "10.0.0.1"))
    assert refused.value.status == 401

    target = await work(lambda s: accounts.peek_link(s, link.token))
    assert target is not None and target.purpose is RESET
    await work(lambda s: accounts.redeem_link(s, settings, link.token, "a brand new pw"))
    signed_in = await work(
        lambda s: accounts.sign_in(s, settings, "member-a@example.com", "a brand new pw", "10.0.0.1")
    )
    assert signed_in == user_id


async def test_redeeming_ends_the_sessions_a_password_opened(work, settings, people):
    user_id = people.member_a.user_id
    await give_password(work, settings, user_id)
    cookie = await start(work, settings, user_id)
    link = await work(lambda s: accounts.create_link(s, settings, None, user_id, INVITE))
    await work(lambda s: accounts.redeem_link(s, settings, link.token, "a brand new pw"))
    assert await work(lambda s: accounts.find_session(s, settings, cookie.token)) is None


async def test_an_admin_cannot_send_a_link_to_an_owner(work, settings, people):
    owner_id = people.owner_a.user_id
    await give_password(work, settings, owner_id)
    await start(work, settings, owner_id)
    links_before = await count_links(work, owner_id)
    for purpose in (INVITE, RESET):
        with pytest.raises(ApiError) as refused:
            await work(lambda s, p=purpose: accounts.create_link(s, settings, people.admin_a, owner_id, p))
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        assert "Owner" in refused.value.message
    assert await count_links(work, owner_id) == links_before
    assert await work(lambda s: accounts.has_password(s, [owner_id])) == {owner_id}
    assert await count_sessions(work, owner_id) == 1


async def test_a_member_cannot_send_links(work, settings, people):
    with pytest.raises(ApiError) as refused:
        await work(lambda s: accounts.create_link(s, settings, people.member_a, people.admin_a.user_id, INVITE))
    assert refused.value.status == 403
    assert await count_links(work, people.admin_a.user_id) == 0


async def test_a_user_outside_the_subtree_is_not_found_and_nothing_is_written(work, settings, people):
    target = people.member_a.user_id
    await give_password(work, settings, target)
    await start(work, settings, target)
    links_before = await count_links(work, target)
    for purpose in (INVITE, RESET):
        with pytest.raises(ApiError) as hidden:
            await work(lambda s, p=purpose: accounts.create_link(s, settings, people.admin_b, target, p))
        assert (hidden.value.status, hidden.value.code) == (404, "not_found")
        assert hidden.value.message == f"user {target} not found"
    assert await count_links(work, target) == links_before
    assert await work(lambda s: accounts.has_password(s, [target])) == {target}
    assert await count_sessions(work, target) == 1
    # An unknown id answers the same 404.
    with pytest.raises(ApiError) as unknown:
        await work(lambda s: accounts.create_link(s, settings, people.admin_b, 999_999, INVITE))
    assert unknown.value.status == 404


async def test_the_shell_may_send_links_to_anyone_but_not_to_nobody(work, settings, people):
    link = await work(lambda s: accounts.create_link(s, settings, None, people.root_owner.user_id, INVITE))
    assert link.user_id == people.root_owner.user_id
    with pytest.raises(ApiError) as unknown:
        await work(lambda s: accounts.create_link(s, settings, None, 999_999, INVITE))
    assert unknown.value.status == 404
