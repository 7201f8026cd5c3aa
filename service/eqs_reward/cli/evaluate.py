"""eqs-reward eval, fidelity, redteam, heads-report and demo: how good the reward is."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from eqs_reward.cli._common import (
    options_from,
    require,
)
from eqs_reward.client import RewardClient
from eqs_reward.offline.options import RedteamOptions


def cmd_eval(args: argparse.Namespace) -> int:
    require("eval", "eval")
    from eqs_reward.offline import eval_report

    out = Path(args.out)
    if args.suggestions:
        report = eval_report.run_suggestions(
            args.url, Path(args.suggestions), args.mode, args.fewshot_version, args.recipe or [None]
        )
        eval_report.print_paper_table(report)
        path = eval_report.write(report, out, "paper_metrics")
        print(f"\nreport: {path}")
        return 0
    if args.recipe and len(args.recipe) > 1:
        raise ValueError("--cases takes one --recipe (its heads' signals are compared to labels)")
    report = eval_report.run_cases(
        args.url,
        Path(args.cases),
        args.mode,
        args.fewshot_version,
        args.repeats,
        args.recipe[0] if args.recipe else None,
    )
    eval_report.print_cases_table(report)
    path = eval_report.write(report, out, "report")
    eval_report.plot_cases(report, out / "report.png")
    print(f"\nreport: {path}  plot: {out / 'report.png'}")
    return 0


def cmd_fidelity_report(args: argparse.Namespace) -> int:
    require("server", "fidelity")
    from eqs_reward.offline import fidelity

    with RewardClient(args.url) as client:
        default = client.recipes()["default"]
    reports = [
        fidelity.measure(args.url, recipe, mode, split)
        for recipe in (args.recipe or [default])
        for mode in (args.mode or ["soft"])
        for split in (args.split or list(fidelity.SPLITS))
    ]
    floors = json.loads(Path(args.floors).read_text()) if args.floors else {}
    command = "eqs-reward fidelity report " + " ".join(sys.argv[3:] if args.out else [])
    text = fidelity.render(reports, floors, command.strip())
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text, encoding="utf-8")
        (out / "report.json").write_text(json.dumps(reports, indent=1, default=str) + "\n")
    if args.readme:
        fidelity.quote_in_readme(Path(args.readme), text)
    failures = [f for r in reports for f in fidelity.check(r, floors)]
    for failure in failures:
        print(f"fidelity gate: {failure}", file=sys.stderr)
    return 1 if failures else 0


def cmd_fidelity_fit(args: argparse.Namespace) -> int:
    require("server", "fidelity")
    from eqs_reward.judge.cases import Example
    from eqs_reward.offline import fidelity

    with RewardClient(args.url) as client:
        bank = client.fewshot()
    examples = [Example.model_validate(e, strict=False) for e in bank["examples"]]
    result = fidelity.fit_stacking(args.url, Path(args.out), examples, _embedder(args))
    print(json.dumps(result, indent=1, default=str))
    print(f"recipe: {args.out}")
    return 0


def _embedder(args: argparse.Namespace) -> Any:
    """The embedder the options name: an OpenAI-compatible endpoint, else wordllama's."""
    from eqs_reward.server.heads import OpenAIEmbedder, WordLlamaEmbedder

    if args.embeddings_url:
        return OpenAIEmbedder(args.embeddings_url, args.embeddings_model)
    return WordLlamaEmbedder()


def cmd_demo(args: argparse.Namespace) -> int:
    from eqs_reward.offline.demo import write_demo

    catalog, clicks = write_demo(Path(args.out))
    print(f"wrote {catalog} and {clicks} (synthetic demo data made by this project)")
    return 0


def cmd_heads_report(args: argparse.Namespace) -> int:
    require("server", "heads-report")
    from eqs_reward.offline import heads_report

    embedder = _embedder(args)
    cases = Path(args.cases) if args.cases else None
    report = asyncio.run(
        heads_report.measure_exclusivity(
            embedder, queries=args.queries, seed=args.seed, cases_path=cases
        )
    )
    heads_report.write_report(report, Path(args.out))
    print(heads_report.render_markdown(report))
    print(f"report: {Path(args.out) / 'exclusivity.json'}")
    return 0


def cmd_redteam(args: argparse.Namespace) -> int:
    from eqs_reward.offline import redteam

    if args.write_corpus:
        count = redteam.write_corpus(Path(args.write_corpus))
        print(f"wrote {count} attacks to {args.write_corpus}")
        return 0
    require("eval", "redteam")
    report = redteam.run(options_from(args, RedteamOptions))
    print(redteam.table(report))
    print(f"\nreport: {Path(args.out) / 'redteam.json'}  plot: {Path(args.out) / 'redteam.png'}")
    return 0
