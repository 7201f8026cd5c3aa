"""What sampling into the review queue adds to ``/v1/score``, side by side in one run.

    python -m loadtest.bench_review [--quick] [--rounds 3] [--results loadtest/RESULTS.md]

Two services on one stub judge, alternating within each round: the queue off, and the queue on
at its worst (every scored suggestion sampled, ``EQS_REWARD_REVIEW_UNIFORM_RATE=1``, so every
request writes to the queue's SQLite file behind its answer). Each request carries one new
suggestion and costs one judge call (cache off), so the difference is the sampling alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from loadtest._results import section, write_sections
from loadtest.bench import case, closed_loop, service, stub_judge
from loadtest.traffic import percentile


def _requests(n: int, tag: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/v1/score", {"items": [{"context": c, "suggestions": [s]}], "options": {"k": 1}})
        for c, s in (case(i, tag) for i in range(n))
    ]


def run(requests: int, concurrency: int, rounds: int) -> dict[str, Any]:
    stub = stub_judge()
    base = {
        "EQS_REWARD_JUDGE_URL": stub.url + "/v1",
        "EQS_REWARD_JUDGE_MODEL": "stub",
        "EQS_REWARD_CACHE_MAX_ENTRIES": "0",
        "EQS_REWARD_DEFAULT_RECIPE": "qualeqs",
    }
    sides = {
        "off": service({**base, "EQS_REWARD_REVIEW_ENABLED": "false"}),
        "on": service({**base, "EQS_REWARD_REVIEW_UNIFORM_RATE": "1"}),
    }
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for number in range(rounds):
            order = ("off", "on") if number % 2 == 0 else ("on", "off")
            for side in order:
                tag = f"{side}-{number}-{uuid.uuid4().hex[:6]}"
                latencies, seconds, errors = asyncio.run(
                    closed_loop(sides[side].url, _requests(requests, tag), concurrency)
                )
                runs[side].append(
                    {
                        "p50_ms": percentile(latencies, 0.5) * 1e3,
                        "p99_ms": percentile(latencies, 0.99) * 1e3,
                        "rps": requests / seconds,
                        "errors": errors,
                    }
                )
    finally:
        for proc in sides.values():
            proc.stop()
        stub.stop()
    median = {
        side: {key: sorted(r[key] for r in rows)[len(rows) // 2] for key in rows[0]}
        for side, rows in runs.items()
    }
    return {
        "requests": requests,
        "concurrency": concurrency,
        "rounds": runs,
        "median": median,
        "added_p50_ms": median["on"]["p50_ms"] - median["off"]["p50_ms"],
        "added_p99_ms": median["on"]["p99_ms"] - median["off"]["p99_ms"],
    }


def render(result: dict[str, Any]) -> str:
    m = result["median"]
    rows = [
        f"{result['requests']} requests per side and round, {result['concurrency']} concurrent, "
        f"{len(result['rounds']['on'])} alternating rounds (medians); each request one new "
        "suggestion, one judge call.",
        "",
        "| review queue | p50 ms | p99 ms | req/s |",
        "|---|---|---|---|",
        *(
            f"| {label} | {m[side]['p50_ms']:.2f} | {m[side]['p99_ms']:.2f} | "
            f"{m[side]['rps']:.0f} |"
            for side, label in (("off", "off"), ("on", "on, every suggestion sampled"))
        ),
        "",
        f"- added by sampling: p50 **{result['added_p50_ms']:+.2f} ms**, "
        f"p99 **{result['added_p99_ms']:+.2f} ms**",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the tests')")
    parser.add_argument("--results", default=None, help="write RESULTS.md's 'review' section")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 30, 1
    result = run(args.requests, args.concurrency, args.rounds)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.results:
        command = " ".join(["python -m loadtest.bench_review", *(argv or sys.argv[1:])])
        text = section("review", "9. The review queue's cost on /v1/score", render(result), command)
        write_sections(Path(args.results), {"review": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
