"""The few-shot bank in Redis, shared by every replica (semantics in ``_stores``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis.exceptions

from eqs_reward.judge.cases import Example, ExampleIn
from eqs_reward.server.bank._errors import (
    BankUnavailableError,
    ExampleNotFoundError,
    StaleVersionError,
    VersionNotFoundError,
)
from eqs_reward.server.bank._stores import BankVersion, VersionInfo, WriteResult, _Store

__all__ = ["RedisBankStore"]


# Keys under the prefix P: P.."latest" (int); P.."version:"..n (JSON: created_at, note, count);
# P.."example:"..id (JSON, never modified); P.."members" (list of "id@added_in", in position
# order); P.."active" (hash id -> "id@added_in" for examples in the newest version);
# P.."retired" (hash "id@added_in" -> the version that retired it).
# KEYS[1] = P.."latest"; ARGV: prefix, expected (-1: any), created_at, note, mode, then for
# "add": id1, body1, id2, body2, ...; for "retire": the id.
_WRITE_SCRIPT = """
local p = ARGV[1]
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[2])
if expected >= 0 and expected ~= latest then
  return {'stale', latest}
end
local version = latest + 1
local added = {}
local duplicates = {}
if ARGV[5] == 'retire' then
  local member = redis.call('HGET', p .. 'active', ARGV[6])
  if not member then return {'missing', latest} end
  redis.call('HDEL', p .. 'active', ARGV[6])
  redis.call('HSET', p .. 'retired', member, version)
else
  for i = 6, #ARGV, 2 do
    local id = ARGV[i]
    if redis.call('HEXISTS', p .. 'active', id) == 1 then
      table.insert(duplicates, id)
    else
      redis.call('SET', p .. 'example:' .. id, ARGV[i + 1], 'NX')
      local member = id .. '@' .. version
      redis.call('RPUSH', p .. 'members', member)
      redis.call('HSET', p .. 'active', id, member)
      table.insert(added, id)
    end
  end
  if #added == 0 and latest > 0 then
    return {'unchanged', latest, cjson.encode(duplicates)}
  end
end
local count = redis.call('HLEN', p .. 'active')
local body = cjson.encode({created_at = ARGV[3], note = ARGV[4], count = count})
redis.call('SET', p .. 'version:' .. version, body)
redis.call('SET', KEYS[1], version)
return {'created', version, cjson.encode(added), cjson.encode(duplicates)}
"""


def _ids(raw: str) -> list[str]:
    # cjson encodes an empty Lua table as an object: "{}".
    value = json.loads(raw)
    return list(value) if isinstance(value, list) else []


class RedisBankStore(_Store):
    """The bank in Redis, shared by every replica. Writes are one atomic Lua script."""

    def __init__(
        self, client: Any, prefix: str = "eqs-reward:fewshot:", *, cache_bytes: int | None = None
    ) -> None:
        super().__init__(cache_bytes)
        self.redis = client
        self.prefix = prefix
        self._script = client.register_script(_WRITE_SCRIPT)

    @property
    def _latest_key(self) -> str:
        return self.prefix + "latest"

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except redis.exceptions.RedisError as exc:
            raise BankUnavailableError(f"few-shot store unreachable: {exc}") from exc

    async def _latest(self) -> int:
        return int(await self._guard(self.redis.get(self._latest_key)) or 0)

    async def _read(self, version: int) -> BankVersion:
        raw = await self._guard(self.redis.get(f"{self.prefix}version:{version}"))
        if raw is None:
            raise VersionNotFoundError(f"few-shot version {version} does not exist")
        body = json.loads(raw)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(self.prefix + "members", 0, -1)
        pipe.hgetall(self.prefix + "retired")
        members, retired = await self._guard(pipe.execute())
        ids: list[str] = []
        for raw_member in members:
            member = raw_member.decode()
            example_id, _, added_in = member.rpartition("@")
            retired_in = retired.get(raw_member)
            if int(added_in) <= version and (retired_in is None or int(retired_in) > version):
                ids.append(example_id)
        bodies = (
            await self._guard(self.redis.mget([f"{self.prefix}example:{i}" for i in ids]))
            if ids
            else []
        )
        examples = tuple(Example.model_validate_json(b) for b in bodies)
        return BankVersion(
            version, examples, datetime.fromisoformat(body["created_at"]), body["note"]
        )

    async def versions(self, limit: int, after: int = 0) -> tuple[list[VersionInfo], int]:
        latest = await self._latest()
        numbers = list(range(after + 1, min(latest, after + limit) + 1))
        if not numbers:
            return [], latest
        raws = await self._guard(self.redis.mget([f"{self.prefix}version:{n}" for n in numbers]))
        out = []
        for number, raw in zip(numbers, raws, strict=True):
            body = json.loads(raw)
            out.append(
                VersionInfo(
                    number, datetime.fromisoformat(body["created_at"]), body["note"], body["count"]
                )
            )
        return out, latest

    async def _run_script(
        self, expected: int | None, note: str, mode: str, args: list[str]
    ) -> list[Any]:
        result: list[Any] = await self._guard(
            self._script(
                keys=[self._latest_key],
                args=[
                    self.prefix,
                    -1 if expected is None else expected,
                    self._now().isoformat(),
                    note,
                    mode,
                    *args,
                ],
            )
        )
        return [r.decode() if isinstance(r, bytes) else r for r in result]

    async def init(self, seed: list[Example]) -> None:
        await self._migrate_v1()
        if await self._latest():
            return
        args = [x for e in seed for x in (e.id, e.model_dump_json())]
        await self._run_script(0, "seed", "add", args)  # 'stale' if another replica seeded

    async def _migrate_v1(self) -> None:
        """Rewrite a 0.1 bank (each version body holding its full id list) as memberships."""
        latest = await self._latest()
        if not latest or await self._guard(self.redis.exists(self.prefix + "members")):
            return
        first = json.loads(await self._guard(self.redis.get(f"{self.prefix}version:1")) or "{}")
        if "ids" not in first:
            return
        self.log.info("migrating the Redis few-shot bank %s to linear storage", self.prefix)
        open_member: dict[str, str] = {}
        pipe = self.redis.pipeline(transaction=True)
        for version in range(1, latest + 1):
            body = json.loads(await self.redis.get(f"{self.prefix}version:{version}"))
            ids = _ids(body["ids"])
            current = set(ids)
            for example_id in [i for i in open_member if i not in current]:
                pipe.hset(self.prefix + "retired", open_member.pop(example_id), version)
            for example_id in ids:
                if example_id not in open_member:
                    open_member[example_id] = f"{example_id}@{version}"
                    pipe.rpush(self.prefix + "members", open_member[example_id])
            slim = {"created_at": body["created_at"], "note": body["note"], "count": len(ids)}
            pipe.set(f"{self.prefix}version:{version}", json.dumps(slim))
        if open_member:
            pipe.hset(self.prefix + "active", mapping=open_member)
        await self._guard(pipe.execute())

    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        new = self._unique(examples)
        args = [x for e in new for x in (e.id, e.model_dump_json())]
        result = await self._run_script(expected_version, note, "add", args)
        self._wrote()
        return self._result(result, expected_version)

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        note = note or f"retire {example_id}"
        result = await self._run_script(expected_version, note, "retire", [example_id])
        self._wrote()
        if result[0] == "missing":
            raise ExampleNotFoundError(f"example {example_id} is not in the active version")
        return self._result(result, expected_version)

    @staticmethod
    def _result(result: list[Any], expected: int | None) -> WriteResult:
        status, version = result[0], int(result[1])
        if status == "stale":
            raise StaleVersionError(expected or 0, version)
        if status == "unchanged":
            return WriteResult(version, False, [], _ids(result[2]))
        added = _ids(result[2]) if len(result) > 2 else []
        duplicates = _ids(result[3]) if len(result) > 3 else []
        return WriteResult(version, True, added, duplicates)

    async def set_calibration(self, version: int, thresholds: dict[str, Any]) -> None:
        await self.get(version)
        await self._guard(
            self.redis.set(f"{self.prefix}calibration:{version}", json.dumps(thresholds))
        )

    async def get_calibration(self, version: int) -> dict[str, Any] | None:
        raw = await self._guard(self.redis.get(f"{self.prefix}calibration:{version}"))
        return None if raw is None else dict(json.loads(raw))

    async def set_taught(self, version: int, embedder: str, body: str) -> None:
        await self._guard(self.redis.set(f"{self.prefix}taught:{version}:{embedder}", body))

    async def get_taught(self, version: int, embedder: str) -> str | None:
        raw = await self._guard(self.redis.get(f"{self.prefix}taught:{version}:{embedder}"))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def ping(self) -> None:
        await self._guard(self.redis.ping())

    async def close(self) -> None:
        return None  # the client belongs to the app
