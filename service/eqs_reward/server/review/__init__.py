"""The review queue of online bad cases: the scoring path samples suggestions worth an
operator's look (judge failures, guard refusals, high group disagreement, verdicts near the
threshold, the judge and the taught head disagreeing, a small uniform sample) into a bounded,
durable queue beside the bank; operators page through it, label cases and publish them as a new
bank version through the bank's gate (``/v1/review``)."""

from __future__ import annotations

from typing import Any

from eqs_reward.server.metrics import Metrics
from eqs_reward.server.review._item import ReviewItem, ReviewQuery
from eqs_reward.server.review._queue import ReviewQueue, as_example
from eqs_reward.server.review._select import ReviewRules, select
from eqs_reward.server.review._stores import RedisReviewStore, ReviewStore, SQLiteReviewStore
from eqs_reward.server.settings import Settings

__all__ = [
    "RedisReviewStore",
    "ReviewItem",
    "ReviewQuery",
    "ReviewQueue",
    "ReviewRules",
    "ReviewStore",
    "SQLiteReviewStore",
    "as_example",
    "open_review",
    "select",
]


def open_review(settings: Settings, redis_client: Any | None, metrics: Metrics) -> ReviewQueue:
    """The queue in the bank's kind of store: Redis when the bank is there, else a SQLite file
    in the data directory."""
    store: ReviewStore
    if settings.fewshot_store == "redis" and redis_client is not None:
        store = RedisReviewStore(redis_client, settings.redis_key_prefix + "review:")
    else:
        store = SQLiteReviewStore(settings.data_dir / "review.sqlite3")
    return ReviewQueue(store, settings, metrics)
