"""Group memory: the rewards the service recently gave each context, so that a sample scored on
its own can still be made neutral when the judge failed on it.

Per-sample trainers (veRL's reward loop, OpenRLHF's agent executor) send one sample per request:
the service never sees a GRPO group whole, yet a failed sample is neutral under group-normalised
advantages only when its reward equals the mean of its group's other samples. With
``options.group_size`` (G) set, every item's outcome is recorded under its *group key* (the
normalised context and everything that changes the reward: judge, prompt, few-shot version, score
mode, k). A failed item then waits, up to ``group_wait_s``, until the outcomes of G - 1 other
samples of its key, recorded since shortly before its request began (``LOOKBACK_S``), are known,
and reports the mean reward of those that were judged (the nearest in time, if there are more).

The memory is bounded (least recently used keys are dropped past ``max_keys``; each key keeps the
last ``per_key`` outcomes) and forgets outcomes after ``ttl_s``. ``GroupMemory`` lives in one
process; with several replicas, ``RedisGroupMemory`` (``EQS_REWARD_GROUP_MEMORY=redis``) keeps
it in Redis, shared by all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GroupFill", "GroupMemory", "RedisGroupMemory"]

log = logging.getLogger("eqs_reward.groups")

#: Outcomes' rewards, None for a failed sample.
Rewards = list[float | None]

#: Siblings recorded up to this long before a failed sample's request began still count. The
#: samples of one group are sent together (their requests start within a second or two), so a
#: sibling's outcome comes after the failed request began, give or take this skew; the previous
#: step's outcomes for the same context are older (a step is generation plus training).
LOOKBACK_S = 5.0


@dataclass(frozen=True, slots=True)
class GroupFill:
    """What the memory knew of a failed sample's group: the mean reward of its judged siblings
    (None when none was judged), how many siblings' outcomes it saw and how many were judged."""

    mean: float | None
    seen: int
    judged: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "seen": self.seen, "judged": self.judged}


def _nearest(
    outcomes: Iterable[Sequence[Any]],
    token: Any,
    since: float,
    now: float,
    ttl_s: float,
    wanted: int,
) -> list[float | None]:
    """Up to ``wanted`` rewards of other samples (``(token, time, reward)`` outcomes) recorded
    after ``since`` and within ``ttl_s``, the nearest in time to the sample's own first."""
    own = next((at for t, at, _ in outcomes if t == token), now)
    others = sorted(
        ((abs(at - own), reward) for t, at, reward in outcomes
         if t != token and at >= since and now - at <= ttl_s),
        key=lambda pair: pair[0],
    )  # fmt: skip
    return [reward for _, reward in others[:wanted]]


def _fill_of(others: list[float | None]) -> GroupFill:
    judged = [r for r in others if r is not None]
    return GroupFill(sum(judged) / len(judged) if judged else None, len(others), len(judged))


class _Memory:
    """What both memories share: a request's rewards are recorded under their group keys, then
    each failed one (``None``) waits for its siblings. A memory supplies its clock, how it
    records a request's outcomes and how one failed sample's fill is found."""

    #: The errors of the memory's own store, which leave a failed sample's fill unknown.
    _fallible: tuple[type[Exception], ...] = ()

    @staticmethod
    def _clock() -> float:
        raise NotImplementedError

    async def _record_all(self, keys: Sequence[str], rewards: Sequence[float | None]) -> list[Any]:
        raise NotImplementedError

    async def _siblings(
        self, key: str, token: Any, since: float, wanted: int
    ) -> list[float | None]:
        """Up to ``wanted`` outcomes of other samples recorded after ``since``, the nearest in
        time to the sample's own."""
        raise NotImplementedError

    async def _wait(self, key: str, remaining: float) -> bool:
        """Wait (at most ``remaining`` seconds) for more outcomes under ``key``; False when none
        can come."""
        raise NotImplementedError

    async def fill(
        self, key: str, token: Any, group_size: int, since: float, wait_s: float
    ) -> GroupFill:
        """The failed sample ``token``'s group fill: wait (at most ``wait_s``) for the outcomes
        of ``group_size - 1`` siblings recorded after ``since - LOOKBACK_S`` (``since`` on the
        memory's clock)."""
        wanted = max(0, group_size - 1)
        deadline = time.monotonic() + wait_s
        while True:
            others = await self._siblings(key, token, since - LOOKBACK_S, wanted)
            remaining = deadline - time.monotonic()
            if len(others) >= wanted or remaining <= 0 or not await self._wait(key, remaining):
                return _fill_of(others)

    async def fill_failed(
        self,
        keys: Sequence[str],
        rewards: Sequence[float | None],
        group_size: int,
        began_s_ago: float,
        wait_s: float,
    ) -> dict[int, GroupFill]:
        """Record a request's rewards under their group keys; each failed one (``None``) waits
        for its siblings (at most ``wait_s``). Its fill, by position in the request.
        ``began_s_ago``: how long ago the request began (each memory keeps its own clock)."""
        since = self._clock() - began_s_ago
        failed = [n for n, reward in enumerate(rewards) if reward is None]
        try:
            tokens = await self._record_all(keys, rewards)
            fills = await asyncio.gather(
                *[self.fill(keys[n], tokens[n], group_size, since, wait_s) for n in failed]
            )
        except self._fallible as exc:  # the memory's failure costs the fill, never the request
            log.warning("group memory failed: %r", exc)
            return {n: GroupFill(None, 0, 0) for n in failed}
        return dict(zip(failed, fills, strict=True))


@dataclass(slots=True)
class _Key:
    outcomes: deque[tuple[int, float, float | None]]
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class GroupMemory(_Memory):
    """Recent outcomes per group key, in this process (see the module docstring)."""

    _clock = staticmethod(time.monotonic)

    def __init__(self, max_keys: int = 100_000, per_key: int = 64, ttl_s: float = 600.0) -> None:
        self.max_keys = max_keys
        self.per_key = per_key
        self.ttl_s = ttl_s
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._keys)

    def record(self, key: str, reward: float | None) -> int:
        """Remember one sample's outcome (None: failed); returns its token."""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key(deque(maxlen=self.per_key))
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        token = next(self._tokens)
        entry.outcomes.append((token, time.monotonic(), reward))
        entry.changed.set()
        entry.changed = asyncio.Event()  # waiters hold the old one, now set
        return token

    async def _record_all(self, keys: Sequence[str], rewards: Sequence[float | None]) -> list[Any]:
        return [self.record(key, reward) for key, reward in zip(keys, rewards, strict=True)]

    async def _siblings(
        self, key: str, token: Any, since: float, wanted: int
    ) -> list[float | None]:
        entry = self._keys.get(key)
        if entry is None:
            return []
        return _nearest(entry.outcomes, token, since, time.monotonic(), self.ttl_s, wanted)

    async def _wait(self, key: str, remaining: float) -> bool:
        entry = self._keys.get(key)
        if entry is None:  # dropped (LRU): nothing more will be recorded where we look
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await entry.changed.wait()
        return True


class RedisGroupMemory(_Memory):
    """The group memory in Redis, shared by every replica (``EQS_REWARD_GROUP_MEMORY=redis``):
    a group's samples may land on different replicas and the failed one still gets its
    siblings' mean. Per group key, one list of ``[token, time, reward]`` (wall-clock time, the
    replicas' common clock), trimmed to ``per_key`` and expiring ``ttl_s`` after its last
    write; a request's outcomes are written in one pipeline; a failed sample polls its list
    every ``POLL_S`` until its siblings are in or its wait ends. A Redis error never fails the
    request: its failed samples' fills are unknown (``None``)."""

    POLL_S = 0.05
    _clock = staticmethod(time.time)
    _fallible = (Exception,)  # the connection, a timeout, a bad reply

    def __init__(self, client: Any, prefix: str, per_key: int = 64, ttl_s: float = 600.0) -> None:
        self.redis = client
        self.prefix = prefix + "group:"
        self.per_key = per_key
        self.ttl_s = ttl_s

    async def _record_all(self, keys: Sequence[str], rewards: Sequence[float | None]) -> list[Any]:
        tokens = [uuid.uuid4().hex for _ in keys]
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, token, reward in zip(keys, tokens, rewards, strict=True):
                name = self.prefix + key
                pipe.rpush(name, json.dumps([token, now, reward]))
                pipe.ltrim(name, -self.per_key, -1)
                pipe.expire(name, max(1, int(self.ttl_s)))
            await pipe.execute()
        return tokens

    async def _siblings(
        self, key: str, token: Any, since: float, wanted: int
    ) -> list[float | None]:
        rows = [json.loads(raw) for raw in await self.redis.lrange(self.prefix + key, 0, -1)]
        return _nearest(rows, token, since, time.time(), self.ttl_s, wanted)

    async def _wait(self, key: str, remaining: float) -> bool:
        await asyncio.sleep(min(self.POLL_S, remaining))  # other replicas write: poll
        return True
