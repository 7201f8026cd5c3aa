"""eqs-reward train, mine, warmstart and iterate: the bundled GRPO loop and its helpers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eqs_reward.cli._common import (
    DEFAULT_URL,
    configure_logging,
    require,
)


def _train_options(args: argparse.Namespace) -> Any:
    from eqs_reward.offline.train import TrainOptions

    return TrainOptions(
        url=args.url,
        out=Path(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        group_size=args.group_size,
        learning_rate=args.lr,
        beta=args.beta,
        max_completion_length=args.max_completion_length,
        prompts=args.prompts,
        extra_contexts=Path(args.extra_contexts) if args.extra_contexts else None,
        model=Path(args.model) if args.model else None,
        fewshot_version=args.fewshot_version,
        score_mode=args.mode,
        seed=args.seed,
        save_model=args.save_model,
        recipe=args.recipe,
    )


def _mine_options(args: argparse.Namespace, out: str) -> Any:
    from eqs_reward.offline.train import MineOptions

    return MineOptions(
        url=args.url,
        out=Path(out),
        contexts=Path(args.contexts) if args.contexts else None,
        candidates=Path(args.candidates) if getattr(args, "candidates", None) else None,
        model=Path(args.model) if args.model else None,
        k=args.k,
        limit=args.limit,
        top=args.top,
        threshold=args.threshold,
        score_mode=args.mode,
        fewshot_version=args.fewshot_version,
        seed=args.seed,
    )


def cmd_train(args: argparse.Namespace) -> int:
    require("train", "train")
    from eqs_reward.offline.train import train

    configure_logging("info")
    print(json.dumps(train(_train_options(args)), indent=2))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    if not args.candidates:
        require("train", "mine", hint=" (or pass --candidates to score given suggestions)")
    from eqs_reward.offline.train import mine

    configure_logging("info")
    print(json.dumps(mine(_mine_options(args, args.out)), indent=2))
    return 0


def _warm_options(args: argparse.Namespace, out: str) -> Any:
    from eqs_reward.offline.warmstart import WarmStartOptions

    return WarmStartOptions(
        url=args.url,
        out=Path(out),
        model=Path(args.model) if args.model else None,
        queries=args.warm_queries,
        epochs=args.warm_epochs,
        learning_rate=args.warm_lr,
        samples=args.warm_samples,
        threshold=args.threshold_sft,
        clicks=Path(args.clicks) if args.clicks else None,
        pairs=Path(args.pairs) if args.pairs else None,
        min_pairs=args.warm_min_pairs,
        fewshot_version=args.fewshot_version,
        score_mode=args.mode,
        seed=args.seed,
    )


def cmd_warmstart(args: argparse.Namespace) -> int:
    require("train", "warmstart")
    from eqs_reward.offline.warmstart import warm_start

    configure_logging("info")
    summary = warm_start(_warm_options(args, args.out))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    require("train", "iterate")
    from eqs_reward.offline.algorithm1 import iterate

    configure_logging("info")
    report = iterate(
        args.rounds,
        _train_options(args),
        _mine_options(args, args.out),
        None if args.no_warm_start else _warm_options(args, args.out),
        held_out=args.held_out,
        eval_samples=args.eval_samples,
        command="eqs-reward " + " ".join(sys.argv[1:]),
    )
    print(Path(args.out) / "stages.md")
    print(json.dumps(report["stages"], indent=2))
    return 0


def add_warm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warm-epochs", type=float, default=5.0, help="SFT epochs over the pairs")
    parser.add_argument("--warm-lr", type=float, default=2e-4, help="SFT learning rate")
    parser.add_argument(
        "--warm-queries", type=int, default=40, help="training queries to build SFT pairs for"
    )
    parser.add_argument(
        "--warm-samples", type=int, default=4, help="answers sampled per query for SFT pairs"
    )
    parser.add_argument(
        "--threshold-sft",
        type=float,
        default=0.5,
        help="keep sampled suggestions whose reward is at least this",
    )
    parser.add_argument(
        "--clicks", default=None, help="click logs JSONL: SFT on what shoppers tapped instead"
    )
    parser.add_argument(
        "--pairs", default=None, help="SFT on this pairs.jsonl (e.g. an earlier warm start's)"
    )
    parser.add_argument(
        "--warm-min-pairs", type=int, default=8, help="stop when fewer SFT pairs than this"
    )


def add_train_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help="eqs-reward service")
    parser.add_argument("--out", default=default_out, help="output folder")
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="completions per step (2 prompts x G)"
    )
    parser.add_argument("--group-size", type=int, default=4, help="GRPO G (num_generations)")
    parser.add_argument(
        "--lr",
        type=float,
        default=2e-5,
        help="learning rate: 2e-5 moves a 135M policy in 20 CPU steps (paper, GPU: 1e-6)",
    )
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient (paper: 0.001)")
    parser.add_argument(
        "--max-completion-length",
        type=int,
        default=80,
        help="tokens per completion: a warm-started answer takes 45-70",
    )
    parser.add_argument("--prompts", type=int, default=64, help="shopper queries to train on")
    parser.add_argument("--extra-contexts", default=None, help="JSONL, e.g. a hard subset")
    parser.add_argument("--model", default=None, help="policy folder (default: SmolLM2-135M)")
    parser.add_argument(
        "--fewshot-version",
        type=int,
        default=None,
        help="pin this bank version (default: the active one, pinned)",
    )
    parser.add_argument("--mode", choices=["binary", "soft"], default="soft")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save-model", action="store_true")
    parser.add_argument(
        "--recipe",
        default=None,
        help="reward recipe (GET /v1/recipes); pinned for the run, default: the server's",
    )


def add_mine_arguments(parser: argparse.ArgumentParser, with_url: bool) -> None:
    if with_url:
        parser.add_argument("--url", default=DEFAULT_URL)
        parser.add_argument("--model", default=None, help="policy folder (default: SmolLM2)")
        parser.add_argument("--fewshot-version", type=int, default=None)
        parser.add_argument("--mode", choices=["binary", "soft"], default="soft")
        parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contexts", default=None, help="JSONL contexts (default: shopper data)")
    parser.add_argument("--k", type=int, default=6, help="candidate suggestions per context")
    parser.add_argument("--limit", type=int, default=32, help="contexts to mine")
    parser.add_argument("--top", type=int, default=8, help="keep the N most disputed")
    parser.add_argument("--threshold", type=float, default=None, help="or every u_q >= this")
