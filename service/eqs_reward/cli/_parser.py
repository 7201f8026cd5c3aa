"""The command line's parser: every command, its options and its help."""

from __future__ import annotations

import argparse

from eqs_reward._version import __version__
from eqs_reward.cli._common import DEFAULT_URL, add_options
from eqs_reward.cli.bank import (
    cmd_bank_add,
    cmd_bank_check,
    cmd_bank_export,
    cmd_bank_import,
    cmd_calibrate,
)
from eqs_reward.cli.catalog import cmd_catalog_load, cmd_catalog_show, cmd_clicks_fit
from eqs_reward.cli.evaluate import (
    cmd_demo,
    cmd_eval,
    cmd_fidelity_fit,
    cmd_fidelity_report,
    cmd_heads_report,
    cmd_redteam,
)
from eqs_reward.cli.serve import cmd_judge, cmd_score, cmd_serve
from eqs_reward.cli.train import add_train_parsers
from eqs_reward.offline.options import RedteamOptions

DESCRIPTION = (
    "Serve rewards, run the embedded judge, score files, operate the few-shot bank, train, "
    "mine and evaluate. A command whose extra is not installed names the one to install."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqs-reward",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eqs-reward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the reward API [server; embedded]")
    serve.add_argument("--host", default=None, help="bind address (EQS_REWARD_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (EQS_REWARD_PORT)")
    serve.add_argument(
        "--create-admin-token",
        action="store_true",
        help="with no EQS_REWARD_ADMIN_TOKEN, use the one in <data dir>/admin-token, made "
        "there (readable by you only) on first start: the console and bank writes need one",
    )
    serve.add_argument(
        "--ray",
        action="store_true",
        help="run as a Ray Serve application on a local Ray cluster, with the Redis and the "
        "judge it needs unless configured [ray]",
    )
    serve.add_argument(
        "--replicas", type=int, default=2, help="with --ray: service replicas (default 2)"
    )
    serve.add_argument(
        "--judge-replicas",
        type=int,
        default=0,
        help="with --ray and no EQS_REWARD_JUDGE_URL: the embedded judge as a Serve fleet of "
        "this many replicas behind Serve's router (default 0: one judge process)",
    )
    serve.set_defaults(func=cmd_serve)

    judge = sub.add_parser("judge", help="run only the embedded vLLM judge [embedded]")
    judge.add_argument("--port", type=int, default=None, help="EQS_REWARD_EMBEDDED_PORT")
    judge.set_defaults(func=cmd_judge)

    score = sub.add_parser("score", help="score a JSONL file against a running service")
    score.add_argument("file", help="JSONL: {context, suggestions|completion|suggestion, id?}")
    score.add_argument("--url", default=DEFAULT_URL, help="service base URL")
    score.add_argument("--mode", choices=["binary", "soft"], default="binary")
    score.add_argument("--k", type=int, default=None, help="expected suggestions per item")
    score.add_argument("--fewshot-version", type=int, default=None)
    score.add_argument("--recipe", default=None, help="reward recipe (default: the server's)")
    score.add_argument("--batch", type=int, default=64, help="items per request")
    score.add_argument("--timeout", type=float, default=300.0)
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score.set_defaults(func=cmd_score)

    add_train_parsers(sub)

    evaluate = sub.add_parser("eval", help="judge agreement on labeled cases, or paper metrics")
    evaluate.add_argument("--url", default=DEFAULT_URL)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--cases", default=None, help="labeled cases JSONL (e.g. judge_cases/dev.jsonl)"
    )
    source.add_argument(
        "--suggestions",
        default=None,
        help='policy outputs JSONL {"context"|"query", "suggestions": [...]}: '
        "Strict Accuracy, Valid Rate, pass rates",
    )
    evaluate.add_argument("--mode", choices=["binary", "soft"], default="soft")
    evaluate.add_argument("--fewshot-version", type=int, default=None)
    evaluate.add_argument("--repeats", type=int, default=1, help="runs; reports mean and spread")
    evaluate.add_argument(
        "--recipe",
        action="append",
        default=None,
        help="recipe to score with (GET /v1/recipes); with --suggestions repeat it to compare "
        "recipes; default: the server's",
    )
    evaluate.add_argument("--out", default="runs/eval")
    evaluate.set_defaults(func=cmd_eval)

    red = sub.add_parser("redteam", help="how much reward attacks win, per family [eval]")
    add_options(red, RedteamOptions)
    red.add_argument(
        "--write-corpus", default=None, help="only write the attacks as JSONL to this file"
    )
    red.set_defaults(func=cmd_redteam)

    heads = sub.add_parser(
        "heads-report", help="measure the exclusivity head on real queries; choose its ramp"
    )
    heads.add_argument("--queries", type=int, default=300)
    heads.add_argument("--seed", type=int, default=5)
    heads.add_argument(
        "--cases", default=None, help="labeled cases JSONL: novelty vs information gain"
    )
    _embeddings_options(heads)
    heads.add_argument("--out", default="runs/heads")
    heads.set_defaults(func=cmd_heads_report)

    calibrate = sub.add_parser("calibrate", help="fit and store pass thresholds for a version")
    calibrate.add_argument("--url", default=DEFAULT_URL)
    calibrate.add_argument("--cases", required=True, help="labeled cases JSONL")
    calibrate.add_argument("--fewshot-version", type=int, default=None)
    calibrate.set_defaults(func=cmd_calibrate)

    catalog = sub.add_parser("catalog", help="the shop's catalog for the retrieval head [server]")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    for name, func, text in (
        ("load", cmd_catalog_load, "load products (JSONL, CSV or Parquet) as a new version"),
        ("show", cmd_catalog_show, "the catalog being served"),
    ):
        command = catalog_sub.add_parser(name, help=text)
        if name == "load":
            command.add_argument("file", nargs="?", default=None, help="products file")
            command.add_argument("--demo", action="store_true", help="the project's demo catalog")
        command.add_argument(
            "--backend", choices=["sqlite", "postgres"], default=None, help="default: settings"
        )
        command.add_argument("--postgres-url", default=None, help="EQS_REWARD_CATALOG_POSTGRES_URL")
        command.set_defaults(func=func)

    clicks = sub.add_parser("clicks", help="the click model head [server]")
    clicks_sub = clicks.add_subparsers(dest="clicks_command", required=True)
    fit = clicks_sub.add_parser("fit", help="fit a click model on impression logs; store it")
    fit.add_argument("logs", nargs="?", default=None, help="JSONL impressions")
    fit.add_argument("--demo", action="store_true", help="the project's demo logs")
    fit.add_argument("--min-clicks", type=int, default=100)
    fit.add_argument("--dry-run", action="store_true", help="report only, store nothing")
    fit.set_defaults(func=cmd_clicks_fit)

    demo = sub.add_parser("demo", help="write the demo catalog and click logs")
    demo.add_argument("--out", default="demo")
    demo.set_defaults(func=cmd_demo)

    fidelity = sub.add_parser("fidelity", help="the reward's fidelity on held-out labels [server]")
    fidelity_sub = fidelity.add_subparsers(dest="fidelity_command", required=True)
    report = fidelity_sub.add_parser(
        "report", help="measure recipes on the validation split; check the floors"
    )
    report.add_argument("--url", default=DEFAULT_URL)
    report.add_argument(
        "--recipe", action="append", default=None, help="repeatable; default: the server's default"
    )
    report.add_argument(
        "--mode", action="append", choices=["binary", "soft"], default=None, help="default: soft"
    )
    report.add_argument(
        "--split",
        action="append",
        choices=["validation", "dev"],
        default=None,
        help="default: both",
    )
    report.add_argument("--floors", default=None, help="floors JSON: exit 1 when one is missed")
    report.add_argument("--out", default=None, help="folder for report.md and report.json")
    report.add_argument("--readme", default=None, help="quote the table in this README")
    report.set_defaults(func=cmd_fidelity_report)
    fit_weights = fidelity_sub.add_parser(
        "fit", help="fit the taught recipe's stacking for the service's judge; write the recipe"
    )
    fit_weights.add_argument("--url", default=DEFAULT_URL)
    fit_weights.add_argument("--out", default="prompts/recipes/qualeqs-taught.toml")
    _embeddings_options(fit_weights, "the service's (EQS_REWARD_EMBEDDINGS_URL)")
    fit_weights.set_defaults(func=cmd_fidelity_fit)

    bank = sub.add_parser("bank", help="the versioned few-shot bank")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    export = bank_sub.add_parser("export", help="write a version's examples as JSONL [server]")
    export.add_argument("--version", type=int, default=None, help="default: the active one")
    export.add_argument("--out", default=None, help="file (default: stdout)")
    export.set_defaults(func=cmd_bank_export)
    imp = bank_sub.add_parser("import", help="add a JSONL file's examples as a version [server]")
    imp.add_argument("file")
    imp.add_argument("--note", default="")
    imp.set_defaults(func=cmd_bank_import)
    add = bank_sub.add_parser("add", help="add examples through a running service's API")
    add.add_argument("file", help="JSONL of examples")
    add.add_argument("--url", default=DEFAULT_URL)
    add.add_argument("--note", default="")
    add.add_argument("--expected-version", type=int, default=None)
    add.add_argument("--force", action="store_true", help="past the agreement gate (recorded)")
    add.set_defaults(func=cmd_bank_add)
    check = bank_sub.add_parser("check", help="dry run: would these examples judge better?")
    check.add_argument("--add", required=True, help="JSONL of candidate examples")
    check.add_argument("--cases", required=True, help="labeled cases JSONL")
    check.add_argument("--url", default=DEFAULT_URL)
    check.add_argument("--mode", choices=["binary", "soft"], default="soft")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_bank_check)
    return parser


def _embeddings_options(parser: argparse.ArgumentParser, whose: str = "") -> None:
    """Which embedder a command uses: an OpenAI-compatible endpoint, else wordllama's."""
    note = f"; {whose}" if whose else ""
    parser.add_argument(
        "--embeddings-url",
        default=None,
        help=f"an OpenAI-compatible …/v1 (default: wordllama{note})",
    )
    parser.add_argument("--embeddings-model", default="", help="the model name at that URL")
