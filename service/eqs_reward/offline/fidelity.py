"""Fidelity: how well a reward ranks labeled suggestions it was not fit on, and the floors CI holds.

- The **validation split** is the packaged ``dev.jsonl`` plus the training cases of the held-out
  queries (``eqs_reward.server.heads.taught.held_out``): nothing is ever fit on it.
- ``measure`` scores it through a running service under one recipe and reports, per dimension
  and for the product (the suggestion reward), the ROC AUC against the labels (a suggestion is
  good when all three labels are 1), and the median reward of the good suggestions against the
  75th percentile of the others.
- ``fit_stacking`` fits the taught recipe's combination with the judge of a running service
  (the fit itself: ``eqs_reward.server.heads.stacking``, shared with the service's background
  refit) and writes the recipe file.
- ``check`` compares a report with committed floors; ``eqs-reward fidelity report --floors``
  and the CI test refuse a change that lowers any of them.

A recipe's value for one dimension is its suggestion reward with the other dimensions' signals
set to 1 (for a product of per-dimension terms, exactly that term).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eqs_reward.client import RewardClient
from eqs_reward.server.heads.stacking import (
    auc,
    fit_cases,
    fit_scored,
    good_on_all,
    oof_taught,
    packaged_cases,
    packaged_training,
    stacking_cases,
    write_recipe,
)
from eqs_reward.server.recipes import FitFor
from eqs_reward.types import DIMENSIONS, ScoreMode

__all__ = [
    "check",
    "fit_cases",
    "fit_stacking",
    "measure",
    "quote_in_readme",
    "render",
    "split_cases",
    "validation_cases",
]


def validation_cases() -> list[dict[str, Any]]:
    """``dev.jsonl`` and the held-out queries' training cases."""
    from eqs_reward.server.heads.taught import held_out

    return packaged_cases("dev.jsonl") + [
        c for c in packaged_training() if held_out(c["context"]["query"])
    ]


#: Cases per request: each request must end within the service's request deadline (120 s by
#: default) on a slow CPU judge, cold prompt prefix included (at 128 a CI run on an AVX2-only
#: machine lost 8 of 108 cases to the deadline; about 1 judge call per second there).
BATCH_ITEMS = 32


def _score(
    url: str, cases: Sequence[dict[str, Any]], recipe: str | None, mode: ScoreMode, cache: bool
) -> tuple[list[Any], dict[str, Any]]:
    items = [
        {"id": str(n), "context": c["context"], "suggestions": [c["suggestion"]]}
        for n, c in enumerate(cases)
    ]
    scored: list[Any] = []
    meta: dict[str, Any] = {}
    with RewardClient(url, k=1, score_mode=mode, recipe=recipe, timeout_s=600) as client:
        for start in range(0, len(items), BATCH_ITEMS):
            response = client.score(items[start : start + BATCH_ITEMS], cache=cache)
            scored += [r.suggestions[0] for r in response.results]
            meta = response.meta.to_dict()
    return scored, meta


def dimension_values(recipe: Any, signals: dict[str, float]) -> dict[str, float]:
    """Each dimension's value under a recipe: its own term when the reward is a product of
    one term per dimension, else its reward with the other dimensions' signals at 1."""
    terms = recipe.dimensions(signals)
    if terms is not None:
        return dict(terms)
    out = {}
    for dimension in DIMENSIONS:
        others = {
            name: 1.0
            for name in signals
            if name.rsplit(".", 1)[-1] in DIMENSIONS and not name.endswith("." + dimension)
        }
        out[dimension] = recipe.suggestion_reward({**signals, **others})
    return out


def _served_recipe(url: str, name: str) -> Any:
    """The recipe as the service at ``url`` runs it (a refit for its judge, a recipe from its
    own EQS_REWARD_PROMPTS_DIR), from ``GET /v1/recipes``."""
    from eqs_reward.server.recipes import Recipe

    with RewardClient(url) as client:
        listing = client.recipes()
    described = next((r for r in listing["recipes"] if r["id"] == name), None)
    if described is None:
        raise ValueError(f"the service at {url} has no recipe {name!r}")
    return Recipe.from_description(described)


SPLITS = ("validation", "dev")


def split_cases(split: str) -> list[dict[str, Any]]:
    """``validation`` (dev and the held-out training queries) or ``dev`` alone."""
    if split == "dev":
        return packaged_cases("dev.jsonl")
    if split == "validation":
        return validation_cases()
    raise ValueError(f"no split {split!r} (known: {', '.join(SPLITS)})")


def measure(
    url: str,
    recipe: str,
    mode: ScoreMode = "soft",
    split: str = "validation",
    cache: bool = True,
) -> dict[str, Any]:
    """One recipe's fidelity on a split of labeled cases it was not fit on."""
    cases = split_cases(split)
    scored, meta = _score(url, cases, recipe, mode, cache)
    definition = _served_recipe(url, recipe)
    rows = [
        (case, s)
        for case, s in zip(cases, scored, strict=True)
        if s.status == "ok" and s.reward is not None and s.signals
    ]
    good = [good_on_all(c) for c, _ in rows]
    rewards = [float(s.reward) for _, s in rows]
    values = [dimension_values(definition, dict(s.signals)) for _, s in rows]
    aucs = {d: auc([c["labels"][d] for c, _ in rows], [v[d] for v in values]) for d in DIMENSIONS}
    aucs["product"] = auc(good, rewards)
    good_rewards = [r for r, g in zip(rewards, good, strict=True) if g]
    other_rewards = sorted(r for r, g in zip(rewards, good, strict=True) if not g)
    return {
        "recipe": recipe,
        "mode": mode,
        "split": split,
        "cases": len(cases),
        "scored": len(rows),
        "good": sum(good),
        "auc": aucs,
        "median_reward_good": statistics.median(good_rewards) if good_rewards else math.nan,
        "p75_reward_others": (
            statistics.quantiles(other_rewards, n=4)[2] if len(other_rewards) > 1 else math.nan
        ),
        "heads": meta.get("recipe", {}).get("heads", {}),
        # which fit was measured: a service's own refit is another version (refit_of names
        # the shipped one), with other coefficients than the packaged file's
        "recipe_version": meta.get("recipe", {}).get("version"),
        "refit_of": definition.refit_of,
        "judge_model": meta.get("judge_model"),
        "fewshot_version": meta.get("fewshot_version"),
    }


def check(report: dict[str, Any], floors: dict[str, Any]) -> list[str]:
    """What falls below its floor (empty: the gate passes). ``floors`` maps a recipe and mode
    and split (``"qualeqs-taught/soft/validation"``) to ``{dimension or "product": minimum}``."""
    wanted = floors.get(f"{report['recipe']}/{report['mode']}/{report['split']}", {})
    failures = []
    for name, floor in wanted.items():
        value = report["auc"].get(name, math.nan)
        if not value >= floor:
            failures.append(
                f"{report['recipe']} ({report['mode']}, {report['split']}): {name} ROC AUC "
                f"{value:.3f} is below "
                f"its floor {floor:.3f}"
            )
    return failures


# -- fitting the stacking -------------------------------------------------------------------
def fit_stacking(
    url: str, recipe_path: Path, examples: Sequence[Any], embedder: Any = None
) -> dict[str, Any]:
    """Fit the taught recipe's stacking on the fitting cases and write the recipe.

    The judge's soft scores come from the service at ``url`` (recipe ``qualeqs``: the judge
    alone, with the bank's examples in its prompt; ``examples`` are those, kept out of the
    cases); never fit on the validation split. The taught head's out-of-fold probabilities
    come from ``embedder`` (default: the packaged wordllama), which should be the service's:
    the recipe names it, and a service with another refits the recipe."""
    from eqs_reward.server.heads import WordLlamaEmbedder
    from eqs_reward.server.heads.taught import TaughtHead

    head = TaughtHead(embedder or WordLlamaEmbedder(), training=())
    cases = stacking_cases(examples)
    scored, meta = _score(url, cases, "qualeqs", "soft", cache=True)
    fit = fit_scored(cases, scored, asyncio.run(oof_taught(cases, examples, head)))
    target = FitFor(str(meta.get("judge_model")), str(meta.get("prompt_version")), head.family)
    write_recipe(recipe_path, fit, target)
    return {**fit, **dataclasses.asdict(target)}


# -- the report -------------------------------------------------------------------------------
README_MARKERS = ("<!-- fidelity-report -->", "<!-- /fidelity-report -->")


def quote_in_readme(readme: Path, report_text: str) -> None:
    """Put the report's table between the README's markers (the README quotes the report and
    types no number of its own; a test compares the two)."""
    start, end = README_MARKERS
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    table = "\n".join(line for line in report_text.splitlines() if line.startswith("|"))
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def render(reports: Sequence[dict[str, Any]], floors: dict[str, Any], command: str) -> str:
    lines = [
        "# Fidelity report",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `{command}`",
        f"- splits, never fit on: validation = {len(validation_cases())} labeled cases (the "
        f"packaged `dev.jsonl`, {len(packaged_cases('dev.jsonl'))}, and the held-out queries of "
        "`train.jsonl`); dev = `dev.jsonl` alone",
        "- ROC AUC against the labels; product: the suggestion reward against 'good on all "
        "three'; floors from `loadtest/fidelity/floors.json` (what CI holds)",
        "",
        "| recipe | mode | split | answerability | factuality | information gain | product | "
        "median reward, good | p75 reward, others | judged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        a = r["auc"]
        lines.append(
            f"| {r['recipe']} | {r['mode']} | {r['split']} | {a['answerability']:.3f} | "
            f"{a['factuality']:.3f} | "
            f"{a['information_gain']:.3f} | **{a['product']:.3f}** | "
            f"{r['median_reward_good']:.3f} | {r['p75_reward_others']:.3f} | "
            f"{r['scored']}/{r['cases']} |"
        )
    lines += ["", "Floors:", ""]
    for key, wanted in sorted(floors.items()):
        if key.startswith("_"):
            continue
        values = ", ".join(f"{name} >= {floor:.3f}" for name, floor in wanted.items())
        lines.append(f"- {key}: {values}")
    failures = [f for r in reports for f in check(r, floors)]
    lines += [
        "",
        "Gate: " + ("**passes**" if not failures else "**fails**: " + "; ".join(failures)),
    ]
    if reports:
        served = {
            f"{r['recipe']} version {r.get('recipe_version')}"
            + (f" (the service's refit of version {r['refit_of']})" if r.get("refit_of") else "")
            for r in reports
        }
        lines += [
            "",
            f"Heads: `{json.dumps(reports[0]['heads'])}`; judge {reports[0]['judge_model']}; "
            f"recipes as served: {', '.join(sorted(served))}.",
        ]
    return "\n".join(lines) + "\n"
