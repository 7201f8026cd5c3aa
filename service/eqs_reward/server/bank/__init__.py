"""The versioned few-shot bank: its stores (SQLite, Redis) and the bank service that applies the
rules of a change (expected version, the agreement gate, force, the note) and fits calibrations."""

from __future__ import annotations

from typing import Any

from eqs_reward.server.bank._errors import (
    BankUnavailableError,
    ExampleNotFoundError,
    StaleVersionError,
    VersionNotFoundError,
)
from eqs_reward.server.bank._redis import RedisBankStore
from eqs_reward.server.bank._service import BankService, GateOutcome, candidate_version
from eqs_reward.server.bank._sqlite import SQLiteBankStore
from eqs_reward.server.bank._stores import (
    ACTIVE_TTL_S,
    BankStore,
    BankVersion,
    FewshotBank,
    VersionInfo,
    WriteResult,
)
from eqs_reward.server.settings import Settings

__all__ = [
    "ACTIVE_TTL_S",
    "BankService",
    "BankStore",
    "BankUnavailableError",
    "BankVersion",
    "ExampleNotFoundError",
    "FewshotBank",
    "GateOutcome",
    "RedisBankStore",
    "SQLiteBankStore",
    "StaleVersionError",
    "VersionInfo",
    "VersionNotFoundError",
    "WriteResult",
    "candidate_version",
    "open_store",
]


def open_store(settings: Settings, redis_client: Any | None) -> BankStore:
    """The configured store: SQLite in the data dir (default), or Redis shared by replicas."""
    if settings.fewshot_store == "redis":
        if redis_client is None:
            raise RuntimeError("EQS_REWARD_FEWSHOT_STORE=redis needs EQS_REWARD_REDIS_URL")
        return RedisBankStore(
            redis_client,
            prefix=settings.redis_key_prefix + "fewshot:",
            cache_bytes=settings.fewshot_version_cache_bytes,
        )
    return SQLiteBankStore(
        settings.data_dir / "fewshot.sqlite3", cache_bytes=settings.fewshot_version_cache_bytes
    )
