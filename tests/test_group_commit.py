"""Group commit (common/group_commit.py): callers that arrive together share one commit, and each still gets
its own answer, or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ihub.common.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


class Store:
    """A stand-in database: one `commit` call is one transaction; a negative item makes the transaction fail."""

    def __init__(self) -> None:
        self.transactions: list[list[int]] = []
        self.committed: list[int] = []

    async def commit(self, batch: Sequence[int]) -> list[int]:
        await asyncio.sleep(0.01)  # the transaction takes a while: later callers queue behind it
        self.transactions.append(list(batch))
        if any(item < 0 for item in batch):
            raise ValueError(f"refused {min(batch)}")
        self.committed.extend(batch)
        return [item * 10 for item in batch]


async def test_concurrent_writes_share_transactions_and_get_their_own_results() -> None:
    store = Store()
    group = GroupCommit(store.commit)
    results = await asyncio.gather(*(group.write(n) for n in range(50)))
    assert results == [n * 10 for n in range(50)]
    assert sorted(store.committed) == list(range(50))
    # Callers that arrive while a transaction is open or about to start share one.
    assert len(store.transactions) <= 2, store.transactions


async def test_one_bad_item_fails_only_its_caller() -> None:
    store = Store()
    group = GroupCommit(store.commit)
    await group.write(0)  # an idle committer: the next callers form one batch
    outcomes = await asyncio.gather(*(group.write(n) for n in (1, -2, 3)), return_exceptions=True)
    assert outcomes[0] == 10 and outcomes[2] == 30
    assert isinstance(outcomes[1], ValueError)
    assert sorted(store.committed) == [0, 1, 3]


async def test_batches_are_bounded() -> None:
    store = Store()
    group = GroupCommit(store.commit, max_batch=8)
    await asyncio.gather(*(group.write(n) for n in range(40)))
    assert max(len(batch) for batch in store.transactions) == 8
    assert sorted(store.committed) == list(range(40))


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    store = Store()
    group = GroupCommit(store.commit)
    leaving = asyncio.create_task(group.write(1))
    staying = asyncio.create_task(group.write(2))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == 20
    assert 1 in store.committed  # its write was already under way: it is committed, only the answer is dropped
