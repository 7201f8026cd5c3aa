"""Load generator: realistic GRPO reward traffic against a running eqs-reward service.

    python -m loadtest.loadgen --url http://127.0.0.1:8000 --concurrency 8 --requests 200
    python -m loadtest.loadgen --rate 5 --duration 60 --json report.json

Closed loop (``--concurrency``: each worker sends its next group when the last one is answered)
or fixed rate (``--rate`` groups per second, open loop). Always bounded: ``--requests`` and
``--duration``, whichever comes first; traffic goes only to the URL given (use loopback).
Reports QPS (requests and suggestions), p50/p95/p99 latency, failure rate, cache hits per tier
and judge calls saved (from the service's /metrics before and after), as a table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtest.traffic import TrafficModel, percentile, repetition


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    http_errors: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    suggestions: int = 0
    distinct_in_request: int = 0
    failed_suggestions: int = 0


def scrape(url: str) -> dict[str, float]:
    """Sum the service's counters we report on, by name and label set."""
    wanted = (
        "eqs_reward_cache_hits_total",
        "eqs_reward_cache_misses_total",
        "eqs_reward_judge_calls_total",
        "eqs_reward_score_suggestions_total",
    )
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


async def run_load(
    url: str,
    model: TrafficModel,
    *,
    concurrency: int | None,
    rate: float | None,
    requests: int,
    duration: float,
    timeout: float = 120.0,
) -> tuple[Run, float]:
    run = Run()
    groups = model.groups()
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=max(concurrency or 0, 64))

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one(body: dict[str, Any]) -> None:
            total, distinct = repetition(body)
            started = time.perf_counter()
            try:
                response = await client.post("/v1/score", json=body)
            except httpx.HTTPError:
                run.http_errors += 1
                return
            finally:
                run.requests += 1
            run.latencies.append(time.perf_counter() - started)
            run.status_counts[response.status_code] = (
                run.status_counts.get(response.status_code, 0) + 1
            )
            if response.status_code != 200:
                return
            run.suggestions += total
            run.distinct_in_request += distinct
            for result in response.json()["results"]:
                run.failed_suggestions += sum(
                    1 for s in result["suggestions"] if s["status"] == "failed"
                )

        started = time.perf_counter()
        if rate:
            tasks: list[asyncio.Task[None]] = []
            for n in range(requests):
                target = started + n / rate
                now = time.perf_counter()
                if time.monotonic() >= stop_at:
                    break
                if target > now:
                    await asyncio.sleep(target - now)
                tasks.append(asyncio.ensure_future(one(next(groups))))
            await asyncio.gather(*tasks)
        else:
            counter = iter(range(requests))

            async def worker() -> None:
                for _ in counter:
                    if time.monotonic() >= stop_at:
                        return
                    await one(next(groups))

            await asyncio.gather(*[worker() for _ in range(concurrency or 1)])
        elapsed = time.perf_counter() - started
    return run, elapsed


def report(
    run: Run, elapsed: float, before: dict[str, float], after: dict[str, float]
) -> dict[str, Any]:
    judge_calls = delta(after, before, "eqs_reward_judge_calls_total")
    scored = run.suggestions
    tiers = {}
    for tier in ("memory", "redis", "inflight"):
        hits = delta(after, before, f'eqs_reward_cache_hits_total{{tier="{tier}"}}')
        misses = delta(after, before, f'eqs_reward_cache_misses_total{{tier="{tier}"}}')
        lookups = hits + (misses if tier != "inflight" else 0)
        tiers[tier] = {"hits": hits, "hit_ratio": hits / lookups if lookups else None}
    ok = run.status_counts.get(200, 0)
    return {
        "requests": run.requests,
        "elapsed_s": round(elapsed, 3),
        "qps_requests": run.requests / elapsed if elapsed else 0.0,
        "qps_suggestions": scored / elapsed if elapsed else 0.0,
        "latency_s": {
            "p50": percentile(run.latencies, 0.50),
            "p95": percentile(run.latencies, 0.95),
            "p99": percentile(run.latencies, 0.99),
            "mean": sum(run.latencies) / len(run.latencies) if run.latencies else float("nan"),
        },
        "status_counts": {str(k): v for k, v in sorted(run.status_counts.items())},
        "request_failure_rate": (run.requests - ok) / run.requests if run.requests else 0.0,
        "suggestion_failure_rate": run.failed_suggestions / scored if scored else 0.0,
        "suggestions": scored,
        "repetition_within_request": 1 - run.distinct_in_request / scored if scored else 0.0,
        "cache": tiers,
        "judge_calls": judge_calls,
        "judge_calls_saved": scored - judge_calls,
        "judge_calls_saved_ratio": 1 - judge_calls / scored if scored else 0.0,
    }


def print_table(data: dict[str, Any]) -> None:
    lat = data["latency_s"]
    rows = [
        ("requests", f"{data['requests']} in {data['elapsed_s']:.1f} s"),
        ("QPS (requests)", f"{data['qps_requests']:.2f}"),
        ("QPS (suggestions)", f"{data['qps_suggestions']:.1f}"),
        (
            "latency p50/p95/p99",
            f"{lat['p50'] * 1000:.1f} / {lat['p95'] * 1000:.1f} / {lat['p99'] * 1000:.1f} ms",
        ),
        ("HTTP statuses", json.dumps(data["status_counts"])),
        ("request failure rate", f"{data['request_failure_rate']:.2%}"),
        ("suggestion failure rate", f"{data['suggestion_failure_rate']:.2%}"),
        ("repetition in a group", f"{data['repetition_within_request']:.1%}"),
    ]
    for tier, values in data["cache"].items():
        ratio = values["hit_ratio"]
        shown = "-" if ratio is None else f"{ratio:.1%}"
        rows.append((f"cache {tier}", f"{values['hits']:.0f} hits ({shown})"))
    rows.append(
        (
            "judge calls",
            f"{data['judge_calls']:.0f} for {data['suggestions']} "
            f"suggestions: {data['judge_calls_saved_ratio']:.1%} saved",
        )
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=None, help="closed loop workers")
    mode.add_argument("--rate", type=float, default=None, help="groups per second (open loop)")
    parser.add_argument("--requests", type=int, default=200, help="at most this many groups")
    parser.add_argument("--duration", type=float, default=60.0, help="at most this many seconds")
    parser.add_argument("--group-size", type=int, default=8, help="G completions per prompt")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--pool", type=int, default=10, help="distinct suggestions per prompt")
    parser.add_argument("--prompts", type=int, default=64, help="distinct prompts cycled")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None, help="write the report here too")
    args = parser.parse_args(argv)
    model = TrafficModel(args.group_size, args.k, args.pool, prompts=args.prompts, seed=args.seed)
    before = scrape(args.url)
    run, elapsed = asyncio.run(
        run_load(
            args.url,
            model,
            concurrency=args.concurrency or (None if args.rate else 4),
            rate=args.rate,
            requests=args.requests,
            duration=args.duration,
        )
    )
    data = report(run, elapsed, before, scrape(args.url))
    print_table(data)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
