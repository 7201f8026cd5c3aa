"""The versioned stores, the same tests against SQLite and a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from eqs_reward.judge.cases import ExampleIn, load_seed_examples
from eqs_reward.server.bank import (
    BankStore,
    BankUnavailableError,
    ExampleNotFoundError,
    RedisBankStore,
    SQLiteBankStore,
    StaleVersionError,
)
from tests._helpers import ROOT

SEED = load_seed_examples(ROOT / "fewshot_bank")


def example(n: int, labels: tuple[int, int, int] = (1, 1, 0)) -> ExampleIn:
    a, f, i = labels
    return ExampleIn.model_validate(
        {
            "context": {"query": f"query {n}"},
            "suggestion": f"Suggestion number {n}?",
            "labels": {"answerability": a, "factuality": f, "information_gain": i},
            "rationale": "test",
            "source": "online_bad_case",
        }
    )


@pytest.fixture(params=["sqlite", "redis"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], BankStore]]:
    """Makes independent clients of one store (separate connections), like separate replicas."""
    made: list[Any] = []
    if request.param == "sqlite":

        def factory() -> BankStore:
            store = SQLiteBankStore(tmp_path / "bank.sqlite3")
            made.append(store)
            return store
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

        def factory() -> BankStore:
            client = redis.asyncio.Redis.from_url(url)
            made.append(client)
            return RedisBankStore(client, prefix=prefix)

    yield factory
    for thing in made:
        if isinstance(thing, SQLiteBankStore):
            await thing.close()
        else:
            await thing.aclose()


@pytest.fixture
async def store(store_factory: Callable[[], BankStore]) -> BankStore:
    store = store_factory()
    await store.init(SEED)
    return store


async def test_seed_is_version_one_once(store_factory: Callable[[], BankStore]) -> None:
    first, second = store_factory(), store_factory()
    await asyncio.gather(first.init(SEED), second.init(SEED))
    await first.init(SEED)
    versions, latest = await first.versions(100)
    assert [v.version for v in versions] == [1] and latest == 1
    active = await second.active()
    assert active.version == 1 and [e.id for e in active.examples] == [e.id for e in SEED]
    assert active.note == "seed"


async def test_add_appends_in_a_new_immutable_version(store: BankStore) -> None:
    v1 = await store.get(1)
    result = await store.add([example(1), example(2)], note="two bad cases")
    assert result.version == 2 and result.created and len(result.added) == 2
    v2 = await store.get(2)
    assert [e.id for e in v2.examples] == [e.id for e in v1.examples] + result.added
    assert v2.note == "two bad cases"
    again = await store.get(1)
    assert again.examples == v1.examples  # version 1 did not move
    third = await store.add([example(3)])
    assert third.version == 3
    versions, latest = await store.versions(100)
    assert [v.version for v in versions] == [1, 2, 3] and latest == 3
    assert [v.example_count for v in versions] == [len(SEED), len(SEED) + 2, len(SEED) + 3]
    page, _ = await store.versions(2, after=1)
    assert [v.version for v in page] == [2, 3]
    assert (await store.active()).version == 3


async def test_duplicates_are_idempotent(store: BankStore) -> None:
    first = await store.add([example(1), example(1)])
    assert first.version == 2 and len(first.added) == 1
    retry = await store.add([example(1)])
    assert not retry.created and retry.version == 2
    assert retry.added == [] and retry.duplicates == first.added
    mixed = await store.add([example(1), example(2)])
    assert mixed.version == 3 and mixed.duplicates == first.added and len(mixed.added) == 1
    seed_again = await store.add([SEED[0]])
    assert not seed_again.created


async def test_expected_version_guards_concurrent_edits(store: BankStore) -> None:
    await store.add([example(1)], expected_version=1)
    with pytest.raises(StaleVersionError) as info:
        await store.add([example(2)], expected_version=1)
    assert info.value.active == 2
    with pytest.raises(StaleVersionError):
        await store.retire(SEED[0].id, expected_version=1)
    assert (await store.active()).version == 2


async def test_retire_makes_a_version_without_it(store: BankStore) -> None:
    target = SEED[3].id
    result = await store.retire(target, note="wrong label")
    assert result.version == 2
    assert target not in {e.id for e in (await store.get(2)).examples}
    assert target in {e.id for e in (await store.get(1)).examples}
    assert (await store.get(2)).note == "wrong label"
    with pytest.raises(ExampleNotFoundError):
        await store.retire(target)
    with pytest.raises(ExampleNotFoundError):
        await store.retire("ex-nope")
    assert (await store.active()).version == 2
    # Re-adding a retired example brings it back in a new version.
    back = await store.add([SEED[3]])
    assert back.created and back.version == 3


async def test_concurrent_adds_from_many_clients_lose_nothing(
    store_factory: Callable[[], BankStore],
) -> None:
    first = store_factory()
    await first.init(SEED)
    clients = [store_factory() for _ in range(12)]
    per_client = 4

    async def writer(index: int, client: BankStore) -> list[tuple[int, list[str]]]:
        acknowledged = []
        for n in range(per_client):
            result = await client.add([example(1000 * index + n)])
            acknowledged.append((result.version, result.added))
        return acknowledged

    results = await asyncio.gather(*[writer(i, c) for i, c in enumerate(clients)])
    acks = [ack for per in results for ack in per]
    total = len(clients) * per_client
    versions = sorted(v for v, _ in acks)
    assert versions == list(range(2, 2 + total))  # strictly increasing, no number twice
    final = await first.active()
    assert final.version == 1 + total
    assert len(final.examples) == len(SEED) + total
    for version, added in acks:  # each version is its predecessor plus exactly its add
        before = [e.id for e in (await first.get(version - 1)).examples]
        after = [e.id for e in (await first.get(version)).examples]
        assert after == before + added


async def test_retire_then_add_back_keeps_every_version_readable(store: BankStore) -> None:
    target = SEED[0]
    await store.retire(target.id)  # v2 without it
    await store.add([example(1)])  # v3
    await store.add([target])  # v4: back, at the end
    ids = {n: [e.id for e in (await store.get(n)).examples] for n in (1, 2, 3, 4)}
    assert ids[1][0] == target.id and target.id not in ids[2] and target.id not in ids[3]
    assert ids[4][-1] == target.id and ids[4][:-1] == ids[3]
    versions, _ = await store.versions(10)
    assert [v.example_count for v in versions] == [len(ids[n]) for n in (1, 2, 3, 4)]


async def _store_size(store: BankStore) -> int:
    if isinstance(store, SQLiteBankStore):
        # fetchall: a PRAGMA returns a row, and a cursor left holding it keeps its statement in
        # progress, so the next write's COMMIT would fail whenever the cursor outlived the call.
        await store._call(lambda: store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        return sum(f.stat().st_size for f in store.path.parent.glob(store.path.name + "*"))
    assert isinstance(store, RedisBankStore)
    total = 0
    async for key in store.redis.scan_iter(match=store.prefix + "*", count=1000):
        total += int(await store.redis.memory_usage(key) or 0)
    return total


async def test_storage_grows_linearly_with_the_number_of_changes(
    store_factory: Callable[[], BankStore],
) -> None:
    """2,000 one-example versions take about ten times the room of 200, not a hundred times
    (the 0.1 layout stored every version's full id list: quadratic)."""
    store = store_factory()
    await store.init(SEED)
    sizes = {}
    for n in range(1, 2001):
        await store.add([example(n)])
        if n in (200, 2000):
            sizes[n] = await _store_size(store)
    assert sizes[2000] <= 12 * sizes[200], sizes
    page, latest = await store.versions(50, after=1990)
    assert latest == 2001 and [v.version for v in page] == list(range(1991, 2002))
    assert len((await store.get(2001)).examples) == len(SEED) + 2000


async def test_a_redis_bank_that_lost_its_data_is_unavailable_not_empty(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisBankStore(client, prefix=redis_prefix)
    await store.init(SEED)
    async for key in client.scan_iter(match=redis_prefix + "*"):
        await client.delete(key)  # a Redis without persistence that restarted
    fresh = RedisBankStore(client, prefix=redis_prefix)
    with pytest.raises(BankUnavailableError, match="lost its data"):
        await fresh.active()
    await client.aclose()


def test_a_0_1_sqlite_bank_is_migrated_to_memberships(tmp_path: Path) -> None:
    """A bank written by 0.1 (a full id list per version) opens with every version as it was."""
    import json
    import sqlite3

    path = tmp_path / "fewshot.sqlite3"
    examples = [make_seed(n) for n in range(4)]
    lists = [["a", "b"], ["a", "b", "c"], ["a", "c"], ["a", "c", "d", "b"]]
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE examples (id TEXT PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE calibrations (version INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE versions (version INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
        "note TEXT NOT NULL, example_ids TEXT NOT NULL);"
    )
    for key, ex in zip("abcd", examples, strict=True):
        conn.execute(
            "INSERT INTO examples VALUES (?, ?)",
            (key, ex.model_copy(update={"id": key}).model_dump_json()),
        )
    for n, ids in enumerate(lists, 1):
        conn.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?)",
            (n, "2026-01-01T00:00:00+00:00", f"v{n}", json.dumps(ids)),
        )
    conn.commit()
    conn.close()

    async def check() -> None:
        store = SQLiteBankStore(path)
        for n, ids in enumerate(lists, 1):
            version = await store.get(n)
            assert [e.id for e in version.examples] == ids and version.note == f"v{n}"
        assert (await store.active()).version == 4
        result = await store.add([example(9)])
        assert result.version == 5
        assert [e.id for e in (await store.get(5)).examples][:4] == lists[-1]
        await store.close()

    asyncio.run(check())


def make_seed(n: int) -> Any:
    from eqs_reward.judge.cases import make_example

    return make_example(example(100 + n))
