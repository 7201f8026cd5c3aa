"""Benchmarks, each measured side by side in one run (these machines are noisy): ratios, not
absolute numbers, carry the verdicts. Each rewrites its own section of loadtest/RESULTS.md.

    python -m loadtest.bench                 # all four
    python -m loadtest.bench --only overhead,cache,memory   # skip the slow vLLM one
    python -m loadtest.bench --quick         # seconds, tiny sizes, RESULTS.md untouched (CI)

1. service overhead: the same load against an instant stub judge, directly and through the
   service (added latency p50/p99, throughput ratio). Targets: < 2 ms at p50, >= 70 %.
2. cache-hit path: scored suggestions/s when everything is cached, in-process tier and Redis
   tier (one worker process). Target: >= 5,000/s for the in-process tier.
3. end to end on the embedded vLLM judge: the service against a naive reward function that
   calls the same judge once per suggestion, sequentially, with a free-text answer.
   Target: >= 3x the naive throughput.
4. memory: resident memory after 100,000 cached entries, and bounded by the cache size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadtest._results import section, write_sections
from loadtest.traffic import TrafficModel, percentile

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EQS_REWARD_")}
        self.log = Path(tempfile.gettempdir()) / f"eqs-bench-{port}.log"
        with self.log.open("wb") as log:  # the child holds its own copy of the descriptor
            self.process = subprocess.Popen(
                argv,
                env={**clean, **(env or {})},
                cwd=ROOT,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, path: str, timeout: float) -> Proc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited; see {self.log}")
            time.sleep(0.3)
        raise TimeoutError(f"{self.url}{path} not ready after {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


def stub_judge() -> Proc:
    port = free_port()
    return Proc([PY, "-m", "eqs_reward.judge.stub", "--port", str(port)], port).wait("/health", 30)


def service(env: dict[str, str], ready_timeout: float = 60) -> Proc:
    port = free_port()
    data = Path(tempfile.gettempdir()) / f"eqs-bench-data-{port}"
    return Proc(
        [PY, "-m", "eqs_reward.cli", "serve", "--port", str(port)],
        port,
        # A stub judge is not the one the shipped stacking was fit for: no background refit
        # (its judge calls would be measured with the requests).
        {
            "EQS_REWARD_DATA_DIR": str(data),
            "EQS_REWARD_LOG_LEVEL": "warning",
            "EQS_REWARD_RECIPE_REFIT": "off",
            **env,
        },
    ).wait("/ready", ready_timeout)


# -- load helpers ------------------------------------------------------------------------------
async def closed_loop(
    url: str, bodies: list[tuple[str, dict[str, Any]]], concurrency: int
) -> tuple[list[float], float, int]:
    """POST every (path, body) with ``concurrency`` workers; latencies, elapsed, errors."""
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for path, body in queue:
                started = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return latencies, time.perf_counter() - started, errors


def case(n: int, tag: str) -> tuple[dict[str, Any], str]:
    return {"query": f"standing desk {n % 50}"}, f"Electric desks {tag} {n} under $300?"


# -- 1. overhead -------------------------------------------------------------------------------
def bench_overhead(
    requests: int, concurrency: int, rounds: int, recipe: str | None = None
) -> dict[str, Any]:
    from eqs_reward.judge import JudgeClient, JudgePrompt
    from eqs_reward.judge.cases import Context, load_seed_examples

    prompt = JudgePrompt.load(ROOT / "prompts", "qualeqs-v2")
    seed = load_seed_examples(ROOT / "fewshot_bank")  # the same prompt the service sends
    stub = stub_judge()
    svc = service(
        {
            "EQS_REWARD_JUDGE_URL": stub.url + "/v1",
            "EQS_REWARD_JUDGE_MODEL": "stub",
            "EQS_REWARD_CACHE_MAX_ENTRIES": "0",
            **({"EQS_REWARD_DEFAULT_RECIPE": recipe} if recipe else {}),
        }
    )
    body_maker = JudgeClient(stub.url + "/v1", "stub")
    try:
        runs: list[dict[str, Any]] = []
        for round_ in range(rounds):
            tag = f"r{round_}-{uuid.uuid4().hex[:6]}"
            cases = [case(n, tag) for n in range(requests)]
            direct = [
                (
                    "/v1/chat/completions",
                    body_maker.request_body(prompt.messages(seed, Context(**c), s), "binary"),
                )
                for c, s in cases
            ]
            # A service request carries one suggestion and costs exactly one judge call.
            via: list[tuple[str, dict[str, Any]]] = [
                (
                    "/v1/score",
                    {"items": [{"context": c, "suggestions": [s + " (svc)"]}], "options": {"k": 1}},
                )
                for c, s in cases
            ]
            d_lat, d_time, d_err = asyncio.run(closed_loop(stub.url, direct, concurrency))
            s_lat, s_time, s_err = asyncio.run(closed_loop(svc.url, via, concurrency))
            # Unloaded: one request in flight, so the difference is the service's own work,
            # not CPU queueing of three Python processes on two cores.
            quiet = min(300, requests)
            d1, _, _ = asyncio.run(closed_loop(stub.url, direct[:quiet], 1))
            q_via = [
                (
                    p,
                    {
                        **b,
                        "items": [
                            {
                                **b["items"][0],
                                "suggestions": [b["items"][0]["suggestions"][0] + " q"],
                            }
                        ],
                    },
                )
                for p, b in via[:quiet]
            ]
            s1, _, _ = asyncio.run(closed_loop(svc.url, q_via, 1))
            runs.append(
                {
                    "direct_p50_ms": percentile(d_lat, 0.5) * 1e3,
                    "direct_p99_ms": percentile(d_lat, 0.99) * 1e3,
                    "service_p50_ms": percentile(s_lat, 0.5) * 1e3,
                    "service_p99_ms": percentile(s_lat, 0.99) * 1e3,
                    "unloaded_direct_p50_ms": percentile(d1, 0.5) * 1e3,
                    "unloaded_service_p50_ms": percentile(s1, 0.5) * 1e3,
                    "unloaded_added_p50_ms": (percentile(s1, 0.5) - percentile(d1, 0.5)) * 1e3,
                    "unloaded_added_p99_ms": (percentile(s1, 0.99) - percentile(d1, 0.99)) * 1e3,
                    "direct_rps": requests / d_time,
                    "service_rps": requests / s_time,
                    "errors": d_err + s_err,
                }
            )
        asyncio.run(body_maker.aclose())
    finally:
        svc.stop()
        stub.stop()
    for r in runs:
        r["added_p50_ms"] = r["service_p50_ms"] - r["direct_p50_ms"]
        r["added_p99_ms"] = r["service_p99_ms"] - r["direct_p99_ms"]
        r["throughput_ratio"] = r["service_rps"] / r["direct_rps"]
    median = sorted(runs, key=lambda r: r["unloaded_added_p50_ms"])[len(runs) // 2]
    median_ratio = sorted(r["throughput_ratio"] for r in runs)[len(runs) // 2]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "rounds": runs,
        "median": median,
        "median_ratio": median_ratio,
        "recipe": recipe or "the server's default",
    }


# -- 2. cache-hit path -------------------------------------------------------------------------
def _cached_group_bodies(tag: str, groups: int) -> list[dict[str, Any]]:
    model = TrafficModel(group_size=8, k=3, pool=24, prompts=groups, seed=hash(tag) % 1000)
    return [model.group(i) for i in range(groups)]


def bench_cache(
    requests: int, concurrency: int, redis_url: str | None, seconds: float = 3.0
) -> dict[str, Any]:
    stub = stub_judge()
    results: dict[str, Any] = {}
    tiers: list[tuple[str, dict[str, str]]] = [("memory", {})]
    if redis_url:
        tiers.append(
            (
                "redis",
                {
                    "EQS_REWARD_CACHE_MAX_ENTRIES": "0",
                    "EQS_REWARD_REDIS_URL": redis_url,
                    "EQS_REWARD_REDIS_KEY_PREFIX": f"eqs-bench-{uuid.uuid4().hex}:",
                },
            )
        )
    try:
        for tier, extra in tiers:
            svc = service(
                {
                    "EQS_REWARD_JUDGE_URL": stub.url + "/v1",
                    "EQS_REWARD_JUDGE_MODEL": "stub",
                    **extra,
                }
            )
            try:
                groups = _cached_group_bodies(tier, 16)
                warm = [("/v1/score", g) for g in groups]
                asyncio.run(closed_loop(svc.url, warm, 4))
                time.sleep(0.5)  # write-behind to Redis
                calls_before = httpx.get(stub.url + "/_stub/stats").json()["calls"]
                bodies = [("/v1/score", groups[n % len(groups)]) for n in range(requests)]
                lat, elapsed, errors = asyncio.run(closed_loop(svc.url, bodies, concurrency))
                calls = httpx.get(stub.url + "/_stub/stats").json()["calls"] - calls_before
                per_request = sum(
                    len(json.loads(i["completion"])["options"]) for i in groups[0]["items"]
                )
                results[tier] = {
                    "suggestions_per_s": requests * per_request / elapsed,
                    "requests_per_s": requests / elapsed,
                    "p50_ms": percentile(lat, 0.5) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "judge_calls_during": calls,
                    "errors": errors,
                    "suggestions_per_request": per_request,
                }
            finally:
                svc.stop()
                if "EQS_REWARD_REDIS_KEY_PREFIX" in extra:  # the benchmark's own keys, dropped
                    _drop_keys(str(redis_url), extra["EQS_REWARD_REDIS_KEY_PREFIX"])
    finally:
        stub.stop()
    results["in_process_scorer"] = asyncio.run(_in_process_cache_rate(seconds))
    return results


async def _in_process_cache_rate(seconds: float = 3.0) -> dict[str, Any]:
    """The scorer alone (no HTTP, no JSON): the ceiling of the cache-hit path in one process."""

    from eqs_reward.judge.stub import StubJudge
    from eqs_reward.server import build_app
    from eqs_reward.server.schemas import ScoreRequest
    from eqs_reward.server.settings import Settings

    stub = StubJudge()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,
            judge_url="http://stub/v1",
            judge_model="stub",  # type: ignore[call-arg]
            data_dir=Path(tmp),
            recipe_refit="off",
        )
        app = build_app(settings, judge_transport=httpx.ASGITransport(app=stub.app()))
        async with app.router.lifespan_context(app):
            scorer = app.state.scoring
            groups = [ScoreRequest.model_validate(g) for g in _cached_group_bodies("inproc", 16)]
            for g in groups:
                await scorer.score(g)
            n = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                await scorer.score(groups[n % len(groups)])
                n += 1
            elapsed = time.perf_counter() - started
    return {"suggestions_per_s": n * 24 / elapsed, "requests_per_s": n / elapsed}


# -- 3. end to end on vLLM ---------------------------------------------------------------------
NAIVE_PROMPT = (
    "You judge follow-up suggestions of a shopping assistant.\n"
    "Shopper's query: {query}\nSuggestion: {suggestion}\n"
    "Answer three questions with yes or no, in this format:\n"
    "answerable: yes/no\nfactual: yes/no\ninformative: yes/no"
)


async def _naive_reward(client: httpx.AsyncClient, model: str, query: str, text: str) -> float:
    """What a trainer's hand-written reward function does: one free-text call, parse words."""
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "temperature": 0.0,
            "max_tokens": 48,
            "messages": [
                {"role": "user", "content": NAIVE_PROMPT.format(query=query, suggestion=text)}
            ],
        },
    )
    answer = response.json()["choices"][0]["message"]["content"].lower()
    votes = re.findall(r"(answerable|factual|informative)\s*:\s*(yes|no)", answer)
    found = dict(votes)
    return float(all(found.get(k) == "yes" for k in ("answerable", "factual", "informative")))


def bench_e2e(
    groups: int, group_size: int, concurrency: int, judge_url: str | None = None
) -> dict[str, Any]:
    if judge_url is None:
        judge_port = free_port()
        judge_url = f"http://127.0.0.1:{judge_port}/v1"
        models = os.environ.get("EQS_REWARD_MODEL_CACHE_DIR", str(ROOT / ".eqs-reward" / "models"))
        env = {"EQS_REWARD_EMBEDDED_PORT": str(judge_port), "EQS_REWARD_MODEL_CACHE_DIR": models}
    else:
        env = {"EQS_REWARD_JUDGE_URL": judge_url}
    svc = service(env, ready_timeout=900)
    model = TrafficModel(group_size=group_size, k=3, pool=10, prompts=groups, seed=11)
    bodies = [model.group(i) for i in range(groups)]
    flat = [
        (b["items"][0]["context"]["query"], s)
        for b in bodies
        for i in b["items"]
        for s in json.loads(i["completion"])["options"]
    ]
    try:
        # Both sides warm (a reward service runs for days): one untimed call each, so the
        # service's one-time prefill of its few-shot prefix is not counted against it.
        warm = {
            "items": [{"context": {"query": "warm-up"}, "suggestions": ["warm-up call"]}],
            "options": {"k": 1},
        }
        httpx.post(svc.url + "/v1/score", json=warm, timeout=300)
        # The service: one request per GRPO group, groups in flight together.
        lat, s_time, errors = asyncio.run(
            closed_loop(svc.url, [("/v1/score", b) for b in bodies], concurrency)
        )

        async def naive() -> float:
            async with httpx.AsyncClient(
                base_url=judge_url.removesuffix("/v1"), timeout=120
            ) as client:
                await _naive_reward(client, "smollm2-135m-instruct", "warm-up", "warm-up call")
                started = time.perf_counter()
                for query, text in flat:
                    await _naive_reward(client, "smollm2-135m-instruct", query, text)
                return time.perf_counter() - started

        n_time = asyncio.run(naive())
        metrics = httpx.get(svc.url + "/metrics").text
        calls = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("eqs_reward_judge_calls_total")
        )
    finally:
        svc.stop()
    n = len(flat)
    return {
        "suggestions": n,
        "groups": groups,
        "group_size": group_size,
        "service_suggestions_per_s": n / s_time,
        "naive_suggestions_per_s": n / n_time,
        "speedup": n_time / s_time,
        "service_p50_s": percentile(lat, 0.5),
        "service_judge_calls": calls,
        "naive_judge_calls": n,
        "errors": errors,
        "service_s": s_time,
        "naive_s": n_time,
    }


# -- 4. memory ---------------------------------------------------------------------------------
def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(entries: int) -> dict[str, Any]:
    from eqs_reward.judge.cases import Context
    from eqs_reward.server.cache import LRUCache, score_key

    cache: LRUCache[tuple[float, float, float]] = LRUCache(entries)
    contexts = [Context(query=f"query number {n}") for n in range(100)]

    def fill(start: int, count: int) -> None:
        for n in range(start, start + count):
            key = score_key(
                judge_model="m",
                versions="p",
                fewshot_version=1,
                score_mode="binary",
                context=contexts[n % 100],
                suggestion=f"suggestion {n}",
            )
            cache.set(key, (1.0, 0.5 + (n % 2) / 2, 0.25))

    fill(0, 1000)  # warm the allocator and the code paths
    cache.clear()
    before = _rss_mib()
    fill(0, entries)
    full = _rss_mib()
    fill(entries, entries)  # twice the size again: LRU evicts, memory must not grow
    after = _rss_mib()
    return {
        "entries": len(cache),
        "limit": entries,
        "rss_before_mib": before,
        "rss_full_mib": full,
        "rss_after_2x_inserts_mib": after,
        "bytes_per_entry": (full - before) * 1024 * 1024 / entries,
        "growth_after_2x_mib": after - full,
    }


# -- 6. the taught head ------------------------------------------------------------------------
def bench_taught(suggestions: int, fit_examples: int) -> dict[str, Any]:
    """The taught head's own time per suggestion (a request of one suggestion, its text new to
    the embedding cache), per suggestion in a GRPO group of 24, and a fit on ``fit_examples``."""
    from datetime import UTC, datetime

    from eqs_reward._resources import fewshot_seed_dir
    from eqs_reward.judge.cases import Context, load_seed_examples
    from eqs_reward.server.bank import BankVersion
    from eqs_reward.server.heads import WordLlamaEmbedder
    from eqs_reward.server.heads.taught import TaughtHead, training_cases

    cases = training_cases()
    head = TaughtHead(WordLlamaEmbedder(), cases)
    seed = load_seed_examples(fewshot_seed_dir())
    version = BankVersion(1, tuple(seed), datetime.now(UTC))

    async def run() -> dict[str, Any]:
        await head.score([(Context(query="warm"), ["warm up"])], version)  # load and fit once
        single = []
        for n in range(suggestions):
            text = f"Which standing desks under ${100 + n} have a memory keypad?"
            started = time.perf_counter()
            await head.score([(Context(query=f"standing desk {n % 50}"), [text])], version)
            single.append(time.perf_counter() - started)
        grouped = []
        for n in range(max(3, suggestions // 24)):
            texts = [f"Desks {n}-{m} under ${200 + m} with two motors?" for m in range(3)]
            items = [(Context(query="standing desk"), texts)] * 8
            started = time.perf_counter()
            await head.score(items, version)
            grouped.append((time.perf_counter() - started) / 24)
        many = [
            seed[n % len(seed)].model_copy(
                update={"suggestion": f"{seed[n % len(seed)].suggestion} ({n})"}
            )
            for n in range(max(0, fit_examples - len(head.training)))
        ]
        started = time.perf_counter()
        await head.fit(many)
        fit_s = time.perf_counter() - started
        return {
            "single_p50_ms": percentile(single, 0.5) * 1e3,
            "single_p99_ms": percentile(single, 0.99) * 1e3,
            "group_per_suggestion_p50_ms": percentile(grouped, 0.5) * 1e3,
            "fit_examples": len(many) + len(head.training),
            "fit_s": fit_s,
            "suggestions": suggestions,
        }

    return asyncio.run(run())


# -- report ------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


TITLES = {
    "overhead": "1. Service overhead against an instant stub judge",
    "cache": "2. Cache-hit path",
    "e2e": "3. End to end on the embedded vLLM judge (SmolLM2-135M, CPU)",
    "memory": "4. Memory of the in-process cache",
    "taught": "6. The taught head: time per suggestion and fit",
}


def render(results: dict[str, Any], command: str) -> dict[str, str]:
    """One section of RESULTS.md per benchmark that ran (key -> text)."""
    out = {}
    for key, title in TITLES.items():
        if key in results:
            body = "\n".join(_render(key, results[key]))
            out[key] = section(key, title, body, command)
    return out


def _render(key: str, result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    results = {key: result}
    if "overhead" in results:
        o = results["overhead"]
        m = o["median"]
        lines += [
            f"{o['requests']} requests per side, {o['concurrency']} concurrent, "
            f"{len(o['rounds'])} alternating rounds; each service request carries one "
            "suggestion and costs one judge call (cache off). The load generator, the service "
            "and the stub share the machine's cores. The service scores under "
            f"{o.get('recipe', 'its default recipe')}: the default, qualeqs-taught, adds the "
            "taught head's own work per new suggestion (section 6) to the machinery measured "
            "here (`--recipe qualeqs` measures the paper's recipe alone).",
            "",
            "| round | unloaded added p50 / p99 ms | loaded direct p50 / p99 ms | "
            "loaded service p50 / p99 ms | direct req/s | service req/s | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(o["rounds"], 1):
            lines.append(
                f"| {i} | {r['unloaded_added_p50_ms']:.2f} / {r['unloaded_added_p99_ms']:.2f} | "
                f"{r['direct_p50_ms']:.2f} / {r['direct_p99_ms']:.2f} | "
                f"{r['service_p50_ms']:.2f} / {r['service_p99_ms']:.2f} | "
                f"{r['direct_rps']:.0f} | {r['service_rps']:.0f} | {r['throughput_ratio']:.0%} |"
            )
        lines += [
            "",
            "- added latency at p50, one request in flight (median round): "
            f"**{m['unloaded_added_p50_ms']:.2f} ms** "
            f"(target < 2 ms: {verdict(m['unloaded_added_p50_ms'] < 2)})",
            f"- throughput through the service, {o['concurrency']} in flight (median round): "
            f"**{o['median_ratio']:.0%}** of direct "
            f"(target >= 70 %: {verdict(o['median_ratio'] >= 0.7)})",
            "",
        ]
        if o["median_ratio"] < 0.7:
            lines += [
                "Why the throughput target is missed here: the comparison is CPU-bound on two "
                "cores shared by three Python processes (load generator, service, stub). The "
                "direct side costs one HTTP exchange per call; through the service it costs two "
                "(trainer to service, service to judge) plus validation and scoring. A sampling "
                "profile (py-spy) of the service under this load put about 55 % of its CPU in "
                "the httpx client call to the judge and about 10 % in FastAPI's request "
                "handling. Against a real judge, which takes 50 ms to seconds per call and runs "
                "on its own GPU machine, the service's ~1.5 ms per call is not the bottleneck. "
                "Not done: a cheaper HTTP client for the judge hop (the issue asks for httpx), "
                "or batching several suggestions into one judge request.",
                "",
            ]
    if "cache" in results:
        c = results["cache"]
        lines += [
            "Every suggestion cached; GRPO groups of 8 completions x 3 suggestions "
            f"({c['memory']['suggestions_per_request']} per request) over HTTP, "
            "one worker process.",
            "",
            "| tier | suggestions/s | requests/s | p50 ms | p99 ms | judge calls |",
            "|---|---|---|---|---|---|",
        ]
        for tier in ("memory", "redis"):
            if tier in c:
                t = c[tier]
                lines.append(
                    f"| {tier} (HTTP) | {t['suggestions_per_s']:.0f} | "
                    f"{t['requests_per_s']:.0f} | {t['p50_ms']:.1f} | "
                    f"{t['p99_ms']:.1f} | {t['judge_calls_during']} |"
                )
        ip = c["in_process_scorer"]
        lines.append(
            f"| memory (scorer, no HTTP) | {ip['suggestions_per_s']:.0f} | "
            f"{ip['requests_per_s']:.0f} | - | - | 0 |"
        )
        lines += [
            "",
            f"- in-process tier over HTTP: **{c['memory']['suggestions_per_s']:.0f} "
            f"suggestions/s** (target >= 5,000: "
            f"{verdict(c['memory']['suggestions_per_s'] >= 5000)})",
            "",
        ]
    if "e2e" in results:
        e = results["e2e"]
        lines += [
            f"{e['groups']} GRPO groups of {e['group_size']} completions x 3 suggestions = "
            f"{e['suggestions']} suggestions, the same list for both sides; both sides warmed "
            "with one untimed call first (a reward service runs for days, so its one-time "
            "prefill of the few-shot prefix is not counted).",
            "",
            "| | suggestions/s | judge calls | wall time s |",
            "|---|---|---|---|",
            f"| eqs-reward (one request per group, concurrent) | "
            f"{e['service_suggestions_per_s']:.2f} | {e['service_judge_calls']:.0f} | "
            f"{e['service_s']:.1f} |",
            f"| naive (one free-text call per suggestion, sequential) | "
            f"{e['naive_suggestions_per_s']:.2f} | {e['naive_judge_calls']} | "
            f"{e['naive_s']:.1f} |",
            "",
            f"- speed-up: **{e['speedup']:.1f}x** (target >= 3x: {verdict(e['speedup'] >= 3)})",
            "",
        ]
    if "memory" in results:
        mm = results["memory"]
        lines += [
            f"- {mm['limit']:,} entries: RSS {mm['rss_before_mib']:.0f} -> "
            f"{mm['rss_full_mib']:.0f} MiB, about **{mm['bytes_per_entry']:.0f} bytes per "
            "entry** (key digest, score tuple, LRU links)",
            f"- after inserting {mm['limit']:,} more with the limit at {mm['limit']:,}: "
            f"{mm['entries']:,} entries, RSS {mm['rss_after_2x_inserts_mib']:.0f} MiB "
            f"(growth {mm['growth_after_2x_mib']:+.0f} MiB: bounded: "
            f"{verdict(mm['entries'] == mm['limit'] and mm['growth_after_2x_mib'] < 16)})",
            "",
        ]
    if "taught" in results:
        t = results["taught"]
        lines += [
            f"The head's whole work (embedding the query and every view of the suggestion, the "
            f"three regressions, the carry-over rule) on {t['suggestions']} suggestions each new "
            "to the embedding cache, one per call; then GRPO groups of 8 completions x 3.",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| one suggestion per request | {t['single_p50_ms']:.2f} | {t['single_p99_ms']:.2f} |",
            f"| per suggestion, 24 per request | {t['group_per_suggestion_p50_ms']:.2f} | - |",
            "",
            f"- added latency per suggestion, p50: **{t['single_p50_ms']:.2f} ms** (target < 5 ms: "
            f"{verdict(t['single_p50_ms'] < 5)}); a judge call on the embedded CPU judge takes "
            "hundreds of milliseconds (section 3), and the head runs beside it, not after it",
            f"- fit on {t['fit_examples']:,} labeled examples: **{t['fit_s']:.2f} s** (done when "
            "a bank version is created)",
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="overhead,cache,e2e,memory,taught")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--e2e-groups", type=int, default=6)
    parser.add_argument("--e2e-group-size", type=int, default=4)
    parser.add_argument(
        "--judge-url",
        default=None,
        help="e2e against this running vLLM judge (its OpenAI root, .../v1) instead of starting "
        "the embedded one",
    )
    parser.add_argument(
        "--recipe", default=None, help="the service's default recipe in the overhead benchmark"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a few seconds each (CI runs this so no benchmark rots unseen); "
        "results are printed, RESULTS.md is left alone unless --results is given",
    )
    parser.add_argument("--results", default=None, help="default: loadtest/RESULTS.md")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.e2e_groups, args.e2e_group_size = 40, 1, 1, 2
    memory_entries, cache_requests = (2_000, 40) if args.quick else (100_000, None)
    only = set(args.only.split(","))
    steps: list[tuple[str, Callable[[], Any]]] = [
        (
            "overhead",
            lambda: bench_overhead(args.requests, args.concurrency, args.rounds, args.recipe),
        ),
        (
            "cache",
            lambda: bench_cache(
                cache_requests or max(300, args.requests // 3),
                4,
                _redis(args.redis_url),
                seconds=0.3 if args.quick else 3.0,
            ),
        ),
        (
            "e2e",
            lambda: bench_e2e(
                args.e2e_groups, args.e2e_group_size, args.e2e_groups, args.judge_url
            ),
        ),
        ("memory", lambda: bench_memory(memory_entries)),
        ("taught", lambda: bench_taught(20 if args.quick else 500, 300 if args.quick else 1000)),
    ]
    results: dict[str, Any] = {}
    for name, step in steps:
        if name in only:
            print(f"running {name} ...", flush=True)
            results[name] = step()
            print(json.dumps(results[name], indent=1, default=str)[:2000], flush=True)
    command = "python -m loadtest.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    sections = render(results, command.strip())
    print("\n\n".join(sections.values()))
    if args.results or not args.quick:
        write_sections(Path(args.results or ROOT / "loadtest" / "RESULTS.md"), sections)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _redis(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
        return url
    except redis.RedisError:
        print(f"no Redis at {url}: skipping the Redis tier", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
