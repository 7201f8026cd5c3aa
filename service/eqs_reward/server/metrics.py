"""Prometheus metrics, named ``eqs_reward_<subsystem>_<name>_<unit>``.

Every label has a small fixed set of values (routes are templates, never raw paths; no texts, no
ids). Each app gets its own registry, so several apps in one process (tests) do not collide.
The service runs one worker process per container (scale with replicas), so the default
single-process collectors are correct.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

# LLM latency spans milliseconds (cache, instant stub) to a minute (overloaded judge).
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
UNIT_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
VARIANCE_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25)


class Metrics:
    """All of the service's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No *_created series: a timestamp gauge per counter/histogram doubles the series count
        # and no panel or alert uses them. (A process-wide switch of prometheus_client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "eqs_reward_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "eqs_reward_http_request_duration_seconds",
            "HTTP request latency, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "eqs_reward_http_requests_in_flight",
            "HTTP requests being served now.",
            registry=r,
        )
        self.suggestions = Counter(
            "eqs_reward_score_suggestions_total",
            "Suggestions scored, by final status (ok, failed, rejected).",
            ["status"],
            registry=r,
        )
        self.judge_calls = Counter(
            "eqs_reward_judge_calls_total",
            "Judge calls (one per uncached suggestion), by outcome: ok on the first attempt, "
            "retried (ok after retries), unparseable (gave up on unreadable answers), failed "
            "(gave up otherwise).",
            ["outcome"],
            registry=r,
        )
        self.judge_attempt_errors = Counter(
            "eqs_reward_judge_attempt_errors_total",
            "Failed judge attempts, by reason (transport, timeout, server_error, rate_limited, "
            "client_error, unparseable).",
            ["reason"],
            registry=r,
        )
        self.judge_calls_abandoned = Counter(
            "eqs_reward_judge_calls_abandoned_total",
            "Judge calls stopped because their caller's deadline passed and no one else waited "
            "for them (cache: false).",
            registry=r,
        )
        self.judge_retries = Counter(
            "eqs_reward_judge_retries_total",
            "Judge attempts repeated after a failure.",
            registry=r,
        )
        self.judge_latency = Histogram(
            "eqs_reward_judge_call_duration_seconds",
            "Latency of one judge call including its retries.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.head_duration = Histogram(
            "eqs_reward_head_duration_seconds",
            "Latency of one reward head's work, by head: an LLM head's call with its retries "
            "(judge, shopper), the exclusivity head's embedding of a request's sets.",
            ["head"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.head_failures = Counter(
            "eqs_reward_head_failures_total",
            "Reward head calls that gave up, by head and reason (their suggestions are failed).",
            ["head", "reason"],
            registry=r,
        )
        self.head_signal = Histogram(
            "eqs_reward_head_signal",
            "Reward head signals of judged suggestions and sets, by signal (head.name).",
            ["signal"],
            buckets=UNIT_BUCKETS,
            registry=r,
        )
        self.judge_in_flight = Gauge(
            "eqs_reward_judge_calls_in_flight",
            "Judge calls running now (bounded by the judge concurrency setting).",
            registry=r,
        )
        self.judge_queue = Gauge(
            "eqs_reward_judge_queue_depth",
            "Judge calls waiting for a free concurrency slot.",
            registry=r,
        )
        self.failures = Counter(
            "eqs_reward_score_failures_total",
            "Suggestions that ended failed or rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.guard_refusals = Counter(
            "eqs_reward_guard_refusals_total",
            "Suggestions refused by the guard before the judge, by reason (a reward-hacking "
            "family: forged_turn, forged_verdict, grader_address, degenerate; or empty, "
            "too_long, invalid_text, control_token, too_many).",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "eqs_reward_cache_hits_total",
            "Score cache hits, by tier (memory, redis, inflight: shared with a call in flight).",
            ["tier"],
            registry=r,
        )
        self.cache_misses = Counter(
            "eqs_reward_cache_misses_total",
            "Score cache misses, by tier.",
            ["tier"],
            registry=r,
        )
        self.cache_errors = Counter(
            "eqs_reward_cache_errors_total",
            "Redis cache operations that failed or timed out (scoring went on without it).",
            ["operation"],
            registry=r,
        )
        self.redis_up = Gauge(
            "eqs_reward_cache_redis_up",
            "1 while the Redis cache tier answers, 0 while it is skipped.",
            registry=r,
        )
        self.review_sampled = Counter(
            "eqs_reward_review_sampled_total",
            "Scored suggestions sampled into the review queue, by reason (a suggestion picked "
            "for two reasons counts under both).",
            ["reason"],
            registry=r,
        )
        self.review_dropped = Counter(
            "eqs_reward_review_dropped_total",
            "Review samples dropped: the buffer was full, or the store could not take them.",
            registry=r,
        )
        self.recipe_fit_stale = Gauge(
            "eqs_reward_recipe_fit_stale",
            "1 while a stacking recipe in use was fit for another judge model or prompt than "
            "the service's (refit in the background with EQS_REWARD_RECIPE_REFIT=background).",
            ["recipe"],
            registry=r,
        )
        self.recipe_refits = Counter(
            "eqs_reward_recipe_refits_total",
            "Background refits of a stacking recipe for the service's judge, by outcome "
            "(done, failed).",
            ["recipe", "outcome"],
            registry=r,
        )
        self.overloaded = Counter(
            "eqs_reward_http_overloaded_total",
            "Score requests refused with 429 because the judge queue was full.",
            registry=r,
        )
        self.cache_entries = Gauge(
            "eqs_reward_cache_entries",
            "Entries in the in-process score cache.",
            registry=r,
        )
        self.reward = Histogram(
            "eqs_reward_score_suggestion_reward",
            "Suggestion rewards r(s) of judged suggestions (under the default recipe the product "
            "of the three dimensions).",
            buckets=UNIT_BUCKETS,
            registry=r,
        )
        self.set_reward = Histogram(
            "eqs_reward_score_set_reward",
            "Set rewards r_q of fully scored items.",
            buckets=UNIT_BUCKETS,
            registry=r,
        )
        self.format_reward = Histogram(
            "eqs_reward_score_format_reward",
            "Format rewards r_f (0 or 1).",
            buckets=(0.0, 0.5, 1.0),
            registry=r,
        )
        self.dimension = Histogram(
            "eqs_reward_score_dimension",
            "Per-dimension judge scores.",
            ["dimension"],
            buckets=UNIT_BUCKETS,
            registry=r,
        )
        self.disagreement = Histogram(
            "eqs_reward_score_disagreement",
            "Group disagreement u_q (population variance of suggestion rewards).",
            buckets=VARIANCE_BUCKETS,
            registry=r,
        )
        self.fewshot_version = Gauge(
            "eqs_reward_fewshot_active_version",
            "Active few-shot bank version.",
            registry=r,
        )
        self.judge_up = Gauge(
            "eqs_reward_judge_up",
            "1 when the last readiness probe of the judge succeeded.",
            registry=r,
        )
        self.embedded_restarts = Counter(
            "eqs_reward_embedded_judge_restarts_total",
            "Restarts of the embedded vLLM judge after it died.",
            registry=r,
        )
        self.build = Info(
            "eqs_reward_build", "Build and configuration of this service.", registry=r
        )
