"""eqs-reward train, mine, warmstart and iterate: the bundled GRPO loop and its helpers.

Their options are generated from the options dataclasses (``TrainOptions``, ``MineOptions``,
``WarmStartOptions``): a default or a help text is written once, on the field."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eqs_reward.cli._common import add_options, configure_logging, options_from, require
from eqs_reward.offline.options import MineOptions, TrainOptions, WarmStartOptions


def cmd_train(args: argparse.Namespace) -> int:
    require("train", "train")
    from eqs_reward.offline.train import train

    configure_logging("info")
    print(json.dumps(train(options_from(args, TrainOptions)), indent=2))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    if not args.candidates:
        require("train", "mine", hint=" (or pass --candidates to score given suggestions)")
    from eqs_reward.offline.train import mine

    configure_logging("info")
    print(json.dumps(mine(options_from(args, MineOptions)), indent=2))
    return 0


def cmd_warmstart(args: argparse.Namespace) -> int:
    require("train", "warmstart")
    from eqs_reward.offline.warmstart import warm_start

    configure_logging("info")
    summary = warm_start(options_from(args, WarmStartOptions))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    require("train", "iterate")
    from eqs_reward.offline.algorithm1 import iterate

    configure_logging("info")
    report = iterate(
        args.rounds,
        options_from(args, TrainOptions),
        options_from(args, MineOptions),
        None if args.no_warm_start else options_from(args, WarmStartOptions),
        held_out=args.held_out,
        eval_samples=args.eval_samples,
        command="eqs-reward " + " ".join(sys.argv[1:]),
    )
    print(Path(args.out) / "stages.md")
    print(json.dumps(report["stages"], indent=2))
    return 0


def add_train_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser("train", help="GRPO (TRL) on SmolLM2-135M with rewards [train]")
    add_options(train, TrainOptions)
    train.set_defaults(func=cmd_train)

    mine = sub.add_parser("mine", help="rank contexts by group disagreement u_q [train]")
    add_options(mine, MineOptions)
    mine.set_defaults(func=cmd_mine)

    warm = sub.add_parser("warmstart", help="warm-start SFT on well-formed answers [train]")
    add_options(warm, WarmStartOptions)
    warm.set_defaults(func=cmd_warmstart)

    iterate = sub.add_parser(
        "iterate",
        help="Algorithm 1: warm start, GRPO, mine, K rounds, metrics per stage [train]",
    )
    iterate.add_argument("--rounds", type=int, default=2)
    iterate.add_argument("--no-warm-start", action="store_true", help="start GRPO from the base")
    iterate.add_argument(
        "--held-out", type=int, default=48, help="held-out real queries per evaluation"
    )
    iterate.add_argument(
        "--eval-samples", type=int, default=2, help="answers sampled per held-out query"
    )
    add_options(iterate, TrainOptions, out=Path("runs/iterate"))
    add_options(iterate, MineOptions, skip=("candidates",))
    add_options(iterate, WarmStartOptions)
    iterate.set_defaults(func=cmd_iterate)
