"""eqs-reward bank and calibrate: the versioned few-shot bank."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import read_jsonl
from eqs_reward.cli._common import (
    settings_with,
)
from eqs_reward.client import RewardClient
from eqs_reward.types import DIMENSIONS


def _example_rows(path: Path) -> list[dict[str, Any]]:
    """Examples from JSONL (the export format, or hand-written cases): ids and timestamps in the
    file are dropped, since ids derive from content; the service validates the rest."""
    rows = read_jsonl(path)
    for row in rows:
        row.pop("id", None)
        row.pop("created_at", None)
    return rows


async def _with_store(settings: Any, action: Callable[[Any], Any]) -> Any:
    import redis.asyncio

    from eqs_reward.judge.cases import load_seed_examples
    from eqs_reward.server.bank import open_store

    client = redis.asyncio.Redis.from_url(settings.redis_url) if settings.redis_url else None
    store = open_store(settings, client)
    try:
        await store.init(load_seed_examples(settings.fewshot_seed_path))
        return await action(store)
    finally:
        await store.close()
        if client is not None:
            await client.aclose()


def cmd_bank_export(args: argparse.Namespace) -> int:
    settings = settings_with()

    async def action(store: Any) -> Any:
        return await (store.get(args.version) if args.version else store.active())

    version = asyncio.run(_with_store(settings, action))
    lines = [e.model_dump_json() for e in version.examples]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(lines)} examples of version {version.version} to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_bank_import(args: argparse.Namespace) -> int:
    settings = settings_with()
    from pydantic import ValidationError

    from eqs_reward.judge.cases import ExampleIn

    try:
        examples = [ExampleIn.model_validate(r) for r in _example_rows(Path(args.file))]
    except ValidationError as exc:
        print(f"{args.file}: bad example: {exc}", file=sys.stderr)
        return 2

    async def action(store: Any) -> Any:
        return await store.add(examples, args.note or f"import {Path(args.file).name}")

    result = asyncio.run(_with_store(settings, action))
    verb = "created version" if result.created else "nothing new; active version stays"
    print(
        f"{verb} {result.version}: {len(result.added)} added, "
        f"{len(result.duplicates)} already present"
    )
    return 0


def cmd_bank_add(args: argparse.Namespace) -> int:
    with RewardClient(args.url) as client:
        data = client.add_examples(
            _example_rows(Path(args.file)),
            note=args.note,
            expected_version=args.expected_version,
            force=args.force,
        )
    print(f"version {data['version']}: added {data['added']}, already present {data['duplicates']}")
    return 0


def _pair(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"{'-':>22}"
    return f"{before:6.3f} -> {after:6.3f} ({after - before:+.3f})"


def cmd_bank_check(args: argparse.Namespace) -> int:
    examples = _example_rows(Path(args.add))
    with RewardClient(args.url, timeout_s=600) as client:
        report = client.check_examples(
            examples, cases=read_jsonl(Path(args.cases)), score_mode=args.mode
        )
    print(
        f"candidate (active v{report['active']['version']} + {len(examples)} examples) on "
        f"{report['cases']} labeled cases, {report['score_mode']} scores: "
        f"{report['verdict'].upper()}"
    )
    print(f"{'':<18} {'agreement':>22} {'AUC':>22}")
    for d in DIMENSIONS:
        a, c = report["active"]["dimensions"][d], report["candidate"]["dimensions"][d]
        print(f"{d:<18} {_pair(a['agreement'], c['agreement'])} {_pair(a['auc'], c['auc'])}")
    print(
        f"{'mean / reward':<18} "
        f"{_pair(report['active']['mean_agreement'], report['candidate']['mean_agreement'])} "
        f"{_pair(report['active']['reward_auc'], report['candidate']['reward_auc'])}"
    )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    with RewardClient(args.url, timeout_s=600) as client:
        fitted = client.calibrate(read_jsonl(Path(args.cases)), version=args.fewshot_version)
    print(f"few-shot v{fitted['version']}: thresholds fitted on {fitted['cases']} cases")
    for d, t in fitted["thresholds"].items():
        print(
            f"  {d:<18} pass if score >= {t:.4f}   agreement "
            f"{fitted['agreement_at_0_5'][d]:.3f} -> {fitted['agreement_fitted'][d]:.3f}"
        )
    return 0
