"""eqs-reward serve, judge and score: the service, its embedded judge, and scoring a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import JsonlError, iter_jsonl
from eqs_reward.cli._common import (
    configure_logging,
    log,
    require,
    settings_with,
)
from eqs_reward.client import RewardClient
from eqs_reward.types import ItemResult


def cmd_serve(args: argparse.Namespace) -> int:
    require("server", "serve")
    from eqs_reward.server import serve

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = settings_with(**overrides)
    configure_logging(settings.log_level)
    if args.create_admin_token and not settings.admin_token:
        path = settings.data_dir / "admin-token"
        settings = settings.model_copy(update={"admin_token": admin_token_in(path)})
        log.info("admin token (console sign-in, bank writes): %s", path)
    if settings.embedded:
        require(
            "embedded",
            "serve",
            hint=" (or set EQS_REWARD_JUDGE_URL to a running OpenAI-compatible judge)",
        )
    if args.ray:
        require("ray", "serve --ray")
        from eqs_reward.server.ray_local import run_local

        run_local(settings, replicas=args.replicas, judge_replicas=args.judge_replicas)
        return 0
    if settings.embedded:
        log.info(
            "no EQS_REWARD_JUDGE_URL: starting the embedded judge (vLLM CPU, SmolLM2-135M) on "
            "port %d; /v1/score answers 503 until it is ready (about a minute)",
            settings.embedded_port,
        )
    serve(settings)
    return 0


def admin_token_in(path: Path) -> str:
    """The admin token kept in ``path``; a new random one written there (mode 0600) if none."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text(encoding="utf-8").strip()


def cmd_judge(args: argparse.Namespace) -> int:
    require("server", "judge")
    require("embedded", "judge")
    from eqs_reward.server import Metrics, embedded_judge

    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["embedded_port"] = args.port
    settings = settings_with(**overrides)
    configure_logging(settings.log_level)

    async def run() -> None:
        judge = embedded_judge(settings, Metrics())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        judge.start()
        await asyncio.wait(
            [asyncio.ensure_future(judge.ready.wait()), asyncio.ensure_future(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if judge.ready.is_set():
            print(
                f"embedded judge ready: EQS_REWARD_JUDGE_URL=http://127.0.0.1:"
                f"{settings.embedded_port}/v1 EQS_REWARD_JUDGE_MODEL={settings.judge_model}",
                flush=True,
            )
        await stop.wait()
        await judge.stop()

    asyncio.run(run())
    return 0


def _score_items(path: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, row in iter_jsonl(path):
        if "context" not in row and "query" not in row:
            raise JsonlError(f"{path}:{number}: needs 'context' (or 'query') and suggestions")
        item: dict[str, Any] = {
            key: row[key] for key in ("id", "context", "suggestions", "completion") if key in row
        }
        item.setdefault("context", {"query": row.get("query")})
        if "suggestion" in row and "suggestions" not in item:  # a judge_cases row
            item["suggestions"] = [row["suggestion"]]
        items.append(item)
    return items


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def cmd_score(args: argparse.Namespace) -> int:
    items = _score_items(Path(args.file))
    if not items:
        print("no items in the file", file=sys.stderr)
        return 1
    options: dict[str, Any] = {"k": args.k, "score_mode": args.mode}
    results: list[ItemResult] = []
    with RewardClient(
        args.url,
        k=args.k,
        fewshot_version=args.fewshot_version,
        recipe=args.recipe,
        timeout_s=args.timeout,
    ) as client:
        for start in range(0, len(items), args.batch):
            response = client.score(items[start : start + args.batch], **options)
            results.extend(response.results)
            meta = response.meta
    if args.json:
        payload = {"results": [r.to_dict() for r in results], "meta": meta.to_dict()}
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return 0
    print(
        f"judge {meta.judge_model}  prompt {meta.prompt_version}  "
        f"few-shot v{meta.fewshot_version}  mode {meta.score_mode}"
    )
    header = f"{'item':<10} {'sugg':<48} {'ans':>5} {'fac':>5} {'gain':>5} {'r(s)':>5}  status"
    print(header)
    print("-" * len(header))
    for index, (item, result) in enumerate(zip(items, results, strict=True)):
        label = str(result.id or item.get("id") or index)[:10]
        for s in result.suggestions:
            text = s.text.replace("\n", " ")
            text = text if len(text) <= 46 else text[:45] + "…"
            status = s.status + (f" ({s.reason})" if s.reason else "")
            print(
                f"{label:<10} {text:<48} {_fmt(s.answerability)} {_fmt(s.factuality)} "
                f"{_fmt(s.information_gain)} {_fmt(s.reward)}  {status}"
            )
            label = ""
        print(
            f"{'':<10} {'set: r_f=' + _fmt(result.format_reward).strip():<48} "
            f"{'':>5} {'':>5} {'u_q':>5} {_fmt(result.disagreement)}  "
            f"r_q={_fmt(result.reward).strip()} {result.status}"
        )
    return 0
