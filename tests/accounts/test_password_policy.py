"""What a new password must be: refused ones store nothing and leave the link usable."""

from __future__ import annotations

import pytest
from accounts_support import PASSWORD

from ihub.accounts import service as accounts
from ihub.accounts.passwords import MAX_PASSWORD_LENGTH, hash_password, verify_password
from ihub.accounts.service import LinkPurpose
from ihub.common.errors import ApiError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("settings_overrides", [{"password_min_length": 12}])
async def test_weak_passwords_are_refused_and_nothing_is_stored(work, settings, people):
    user_id = people.member_a.user_id
    link = await work(lambda s: accounts.create_link(s, settings, None, user_id, LinkPurpose.INVITE))
    for weak, says in (
        ("x" * 11, "at least 12 characters"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), f"at most {MAX_PASSWORD_LENGTH}"),
        ("Member-A@example.com", "email"),
    ):
        with pytest.raises(ApiError) as refused:
            await work(lambda s, w=weak: accounts.redeem_link(s, settings, link.token, w))
        assert (refused.value.status, refused.value.code) == (400, "weak_password")
        assert says in refused.value.message
        assert await work(lambda s: accounts.has_password(s, [user_id])) == set()
    # The link was not used up by the refusals; exactly the minimum length is accepted.
    assert await work(lambda s: accounts.peek_link(s, link.token)) is not None
    assert await work(lambda s: accounts.redeem_link(s, settings, link.token, "y" * 12)) == user_id


def test_hashes_are_argon2id_and_salted():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$") and first != second
    assert verify_password(first, PASSWORD).matches and not verify_password(first, PASSWORD + "!").matches
    assert not verify_password("not a hash", PASSWORD).matches
