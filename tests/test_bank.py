"""The versioned stores, the same tests against SQLite and a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from service.bank import (
    BankStore,
    ExampleNotFoundError,
    RedisBankStore,
    SQLiteBankStore,
    StaleVersionError,
    estimate_tokens,
    select_examples,
)
from service.fewshot import ExampleIn, load_seed_examples, make_example
from service.rewards import DIMENSIONS

ROOT = Path(__file__).resolve().parent.parent
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
    versions = await first.versions()
    assert [v.version for v in versions] == [1]
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
    assert [v.version for v in await store.versions()] == [1, 2, 3]
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


def test_selection_under_budget_is_deterministic_and_covers_failures() -> None:
    examples = tuple(
        make_example(example(n, labels))
        for n, labels in enumerate([(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1)] * 10)
    )
    total = sum(estimate_tokens(e) for e in examples)
    assert select_examples(examples, total) == examples  # fits: everything, same order
    assert select_examples(examples, 0) == examples  # 0: no limit
    budget = total // 4
    chosen = select_examples(examples, budget)
    assert chosen == select_examples(examples, budget)
    assert sum(estimate_tokens(e) for e in chosen) <= budget
    positions = [examples.index(e) for e in chosen]
    assert positions == sorted(positions)  # bank order kept
    for dimension in DIMENSIONS:
        assert any(getattr(e.labels, dimension) == 0 for e in chosen), dimension
    assert examples[-1] in chosen  # newest first
    tiny = select_examples(examples, 1)  # even a tiny budget keeps each failure kind
    assert {d for d in DIMENSIONS for e in tiny if getattr(e.labels, d) == 0} == set(DIMENSIONS)
