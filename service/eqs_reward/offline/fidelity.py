"""Fidelity: how well a reward ranks labeled suggestions it was not fit on, and the floors CI holds.

- The **validation split** is the packaged ``dev.jsonl`` plus the training cases of the held-out
  queries (``eqs_reward.server.heads.taught.held_out``): nothing is ever fit on it.
- ``measure`` scores it through a running service under one recipe and reports, per dimension
  and for the product (the suggestion reward), the ROC AUC against the labels (a suggestion is
  good when all three labels are 1), and the median reward of the good suggestions against the
  75th percentile of the others.
- ``fit_stacking`` fits the taught recipe's combination: per dimension, a logistic stacker
  over the judge's soft score and the taught head's out-of-fold probability, its binary
  threshold and its power in the product, chosen on the fitting cases only (query-grouped
  folds), and writes the recipe file.
- ``check`` compares a report with committed floors; ``eqs-reward fidelity report --floors``
  and the CI test refuse a change that lowers any of them.

A recipe's value for one dimension is its suggestion reward with the other dimensions' signals
set to 1 (for a product of per-dimension terms, exactly that term).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import read_jsonl
from eqs_reward._resources import judge_cases_dir
from eqs_reward.client import RewardClient
from eqs_reward.evaluation import roc_auc
from eqs_reward.types import DIMENSIONS, ScoreMode, SuggestionScore

__all__ = [
    "check",
    "fit_cases",
    "fit_scored",
    "fit_stacking",
    "measure",
    "oof_taught",
    "quote_in_readme",
    "render",
    "split_cases",
    "stacking_cases",
    "validation_cases",
    "write_recipe",
]


def _cases(name: str) -> list[dict[str, Any]]:
    return read_jsonl(judge_cases_dir() / name)


def _training() -> list[dict[str, Any]]:
    from eqs_reward.server.heads.taught import TRAINING_FILES

    return [case for name in TRAINING_FILES for case in _cases(name)]


def validation_cases() -> list[dict[str, Any]]:
    """``dev.jsonl`` and the held-out queries' training cases."""
    from eqs_reward.server.heads.taught import held_out

    return _cases("dev.jsonl") + [c for c in _training() if held_out(c["context"]["query"])]


def fit_cases() -> list[dict[str, Any]]:
    """The training cases the taught head and the recipe's stacking are fit on."""
    from eqs_reward.server.heads.taught import held_out

    return [c for c in _training() if not held_out(c["context"]["query"])]


def _good(case: dict[str, Any]) -> int:
    return int(all(case["labels"][d] == 1 for d in DIMENSIONS))


def _auc(labels: Sequence[int], values: Sequence[float]) -> float:
    if len(set(labels)) < 2 or len(set(values)) < 2:
        return math.nan
    return roc_auc(labels, values)


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
        return _cases("dev.jsonl")
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
    good = [_good(c) for c, _ in rows]
    rewards = [float(s.reward) for _, s in rows]
    values = [dimension_values(definition, dict(s.signals)) for _, s in rows]
    auc = {d: _auc([c["labels"][d] for c, _ in rows], [v[d] for v in values]) for d in DIMENSIONS}
    auc["product"] = _auc(good, rewards)
    good_rewards = [r for r, g in zip(rewards, good, strict=True) if g]
    other_rewards = sorted(r for r, g in zip(rewards, good, strict=True) if not g)
    return {
        "recipe": recipe,
        "mode": mode,
        "split": split,
        "cases": len(cases),
        "scored": len(rows),
        "good": sum(good),
        "auc": auc,
        "median_reward_good": statistics.median(good_rewards) if good_rewards else math.nan,
        "p75_reward_others": (
            statistics.quantiles(other_rewards, n=4)[2] if len(other_rewards) > 1 else math.nan
        ),
        "heads": meta.get("recipe", {}).get("heads", {}),
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
#: The powers a dimension's stacked probability may be raised to in the product (chosen per
#: dimension on out-of-fold product ROC AUC; 1 on a tie).
POWER_GRID = (0.25, 0.5, 1.0, 2.0)
#: Inverse L2 strength of the per-dimension stacker (two inputs, a few hundred rows).
STACKER_C = 1.0


async def oof_taught(
    cases: Sequence[dict[str, Any]], examples: Sequence[Any], head: Any = None
) -> dict[str, list[float]]:
    """The taught head's out-of-fold probabilities on ``cases`` (5 folds grouped by query),
    each fold's model fit and read through the service's own head (``TaughtHead.fit_cases``
    and ``predict``; ``head``: the service's, with its embedder; default: one on the packaged
    wordllama): the bank's examples plus the other folds."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    from eqs_reward.judge.cases import LabeledCase
    from eqs_reward.server.heads import WordLlamaEmbedder
    from eqs_reward.server.heads.taught import TaughtHead, as_case

    head = head or TaughtHead(WordLlamaEmbedder(), training=())
    labeled = [LabeledCase.model_validate(c) for c in cases]
    bank = [as_case(e) for e in examples]
    groups = [c.context.query for c in labeled]
    out = {d: [0.0] * len(labeled) for d in DIMENSIONS}
    for train, test in GroupKFold(5).split(np.zeros(len(labeled)), groups=groups):
        model = await head.fit_cases([labeled[int(i)] for i in train] + bank)
        pairs = [(labeled[int(i)].context.query, labeled[int(i)].suggestion) for i in test]
        rows, _, _ = await head.predict(model, pairs)
        for i, row in zip(test, rows, strict=True):
            for d in DIMENSIONS:
                out[d][int(i)] = row[d]
    return out


def _logits(values: Sequence[float]) -> Any:
    import numpy as np

    from eqs_reward.server.recipes import _STACKED_EPSILON

    p = np.clip(np.asarray(values, dtype=np.float64), _STACKED_EPSILON, 1 - _STACKED_EPSILON)
    return np.log(p / (1 - p))


def _threshold(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """The binary mode's cut: the probability that best separates the labels out of fold
    (balanced accuracy, so a dimension that is mostly 1 still gets 0s where they belong)."""
    best, cut = -1.0, 0.5
    positives = max(1, sum(labels))
    negatives = max(1, len(labels) - sum(labels))
    for t in [n / 100 for n in range(5, 96)]:
        hit = sum(1 for y, p in zip(labels, probabilities, strict=True) if (p >= t) == bool(y))
        tp = sum(1 for y, p in zip(labels, probabilities, strict=True) if y and p >= t)
        tn = hit - tp
        score = tp / positives + tn / negatives
        if score > best + 1e-9:
            best, cut = score, t
    return cut


def _stack(
    labels: Sequence[int], judge: Sequence[float], taught: Sequence[float], groups: Sequence[str]
) -> dict[str, Any]:
    """One dimension's stacker: a logistic regression over the log-odds of the judge's soft
    score and of the taught head's out-of-fold probability, its own out-of-fold predictions
    (query-grouped) and its binary threshold. A judge that ranks a dimension backwards gets
    no weight (its log-odds are dropped) rather than a negative one: the stacker corrects a
    weak judge's scale, it does not learn to read it upside down."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    y = np.asarray(labels)
    columns = [_logits(judge), _logits(taught)]
    use = [True, True]
    for _ in range(2):
        x = np.column_stack([c for c, u in zip(columns, use, strict=True) if u])
        model = LogisticRegression(C=STACKER_C, max_iter=1000).fit(x, y)
        if not use[0] or model.coef_[0][0] >= 0:
            break
        use[0] = False
    weights = iter(float(c) for c in model.coef_[0])
    coef = [next(weights) if u else 0.0 for u in use]
    oof = np.zeros(len(y))
    for train, test in GroupKFold(5).split(x, groups=groups):
        fold = LogisticRegression(C=STACKER_C, max_iter=1000).fit(x[train], y[train])
        oof[test] = fold.predict_proba(x[test])[:, 1]
    return {
        "coef": [round(c, 4) for c in coef],
        "intercept": round(float(model.intercept_[0]), 4),
        "threshold": _threshold(list(y), list(oof)),
        "oof": [float(p) for p in oof],
        "auc_judge": _auc(labels, judge),
        "auc_taught": _auc(labels, taught),
        "auc_stacked": _auc(labels, list(oof)),
    }


def _powers(good: Sequence[int], oof: dict[str, list[float]]) -> dict[str, float]:
    """Per dimension, the power of its stacked probability in the product with the best
    out-of-fold product ROC AUC (nearest to 1 on a tie)."""
    import itertools

    def auc(powers: Sequence[float]) -> float:
        rewards = [
            math.prod(oof[d][n] ** p for d, p in zip(DIMENSIONS, powers, strict=True))
            for n in range(len(good))
        ]
        return _auc(good, rewards)

    best = max(
        itertools.product(POWER_GRID, repeat=len(DIMENSIONS)),
        key=lambda powers: (round(auc(powers), 6), -sum(abs(math.log(p)) for p in powers)),
    )
    return dict(zip(DIMENSIONS, best, strict=True))


def stacking_cases(examples: Sequence[Any]) -> list[dict[str, Any]]:
    """The fitting cases the stacking is fit on: those whose text is not one of ``examples``
    (the bank's, shown in the judge's prompt: the judge would be graded on its own answers)."""
    shown = {(e.context.query, e.suggestion) for e in examples}
    return [c for c in fit_cases() if (c["context"]["query"], c["suggestion"]) not in shown]


def fit_scored(
    cases: Sequence[dict[str, Any]],
    scored: Sequence[SuggestionScore],
    taught: dict[str, list[float]],
) -> dict[str, Any]:
    """Fit the stacking from the judge's soft scores of ``cases`` (``stacking_cases``; a case
    the judge failed is left out) and the taught head's out-of-fold probabilities
    (``oof_taught``): per dimension, a stacker over their log-odds, its binary threshold, and
    the power of its probability in the product, all chosen out of fold, grouped by query.
    The command and the service's background refit share it."""
    keep = [n for n, s in enumerate(scored) if s.status == "ok"]
    groups = [cases[n]["context"]["query"] for n in keep]
    fitted: dict[str, Any] = {}
    for d in DIMENSIONS:
        fitted[d] = _stack(
            [cases[n]["labels"][d] for n in keep],
            [float(scored[n].dimension(d) or 0.0) for n in keep],
            [taught[d][n] for n in keep],
            groups,
        )
    powers = _powers([_good(cases[n]) for n in keep], {d: fitted[d]["oof"] for d in DIMENSIONS})
    for d in DIMENSIONS:
        fitted[d]["power"] = powers[d]
        del fitted[d]["oof"]
    return {"cases": len(keep), "dimensions": fitted}


def write_recipe(
    path: Path, fit: dict[str, Any], judge_model: str, prompt_version: str, base_version: int = 0
) -> int:
    """Write the fitted recipe to ``path`` (its id: the file's name); its version: the file's
    own when the terms are unchanged, else one more than the larger of the file's and
    ``base_version`` (scores are cached under a recipe's version: a new fit must not meet old
    entries)."""
    terms = {d: _stacked_term(d, fit["dimensions"][d]) for d in DIMENSIONS}
    version = _next_version(path, terms, base_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"judge_model": judge_model, "prompt_version": prompt_version, "cases": fit["cases"]}
    if base_version:  # a service's refit of a shipped recipe: which one (see server/refit.py)
        head["refit_of"] = base_version
    text = _recipe_text(path.stem, fit["dimensions"], terms, head, version)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
    return version


def fit_stacking(url: str, recipe_path: Path, examples: Sequence[Any]) -> dict[str, Any]:
    """Fit the taught recipe's stacking on the fitting cases and write the recipe.

    The judge's soft scores come from the service at ``url`` (recipe ``qualeqs``: the judge
    alone, with the bank's examples in its prompt; ``examples`` are those, kept out of the
    cases); never fit on the validation split."""
    cases = stacking_cases(examples)
    scored, meta = _score(url, cases, "qualeqs", "soft", cache=True)
    fit = fit_scored(cases, scored, asyncio.run(oof_taught(cases, examples)))
    write_recipe(recipe_path, fit, str(meta.get("judge_model")), str(meta.get("prompt_version")))
    return {**fit, "judge_model": meta.get("judge_model")}


def _stacked_term(dimension: str, fitted: dict[str, Any]) -> dict[str, Any]:
    return {
        "stacked": {
            "terms": [f"judge.{dimension}", f"taught.{dimension}"],
            "coef": fitted["coef"],
            "intercept": fitted["intercept"],
            "threshold": fitted["threshold"],
            "power": fitted["power"],
        }
    }


def _next_version(path: Path, terms: dict[str, Any], base: int) -> int:
    """See ``write_recipe``."""
    if not path.is_file():
        return base + 1
    import tomllib

    old = tomllib.loads(path.read_text(encoding="utf-8"))
    same = old["suggestion_reward"]["product"] == [terms[d] for d in DIMENSIONS]
    return int(old["version"]) if same else max(int(old["version"]), base) + 1


def _toml(value: Any) -> str:
    """A term as an inline TOML table (numbers, strings, lists and tables only)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _recipe_text(
    recipe_id: str,
    fitted: dict[str, Any],
    terms: dict[str, Any],
    fit: dict[str, Any],
    version: int,
) -> str:
    """``fit``: the ``[fit]`` table (judge_model, prompt_version, cases; refit_of), dated."""
    date = f"{datetime.now(UTC):%Y-%m-%d}"
    fit = {**fit, "date": date}
    judge_model, prompt_version, cases = fit["judge_model"], fit["prompt_version"], fit["cases"]
    lines = [
        "# QualEQS with the taught head: per dimension, a logistic stacker over the judge's soft",
        "# score and the taught head's probability, fit on labels (not set by hand):",
        "#   eqs-reward fidelity fit  (against a service running the judge it is fit for)",
        f"# Fit {date} on {cases} packaged training cases (held-out queries",
        f"# and the bank's examples left out) for judge {judge_model}, prompt {prompt_version};",
        "# out-of-fold ROC AUC per dimension (judge alone / taught alone / stacked):",
    ]
    for d in DIMENSIONS:
        f = fitted[d]
        lines.append(
            f"#   {d}: {f['auc_judge']:.3f} / {f['auc_taught']:.3f} / {f['auc_stacked']:.3f}"
        )
    lines += [
        "# threshold: the stored calibration (best balanced accuracy out of fold), not applied",
        "#   r(s) = product over the three dimensions of the stacked value (to its power)",
        "#   r_q  = r_f * mean_s r(s)",
        "",
        f"id = {json.dumps(recipe_id)}",
        f"version = {version}",
        'description = "QualEQS dimensions from the judge and the taught head, stacked by a '
        "model fit on labeled cases; the paper's product and set reward.\"",
        "",
        "[heads.judge]",
        "[heads.taught]",
        "",
        "# What the stacking was fit for: the service refits it when its judge or prompt differ",
        "# (EQS_REWARD_RECIPE_REFIT).",
        "[fit]",
        *(f"{key} = {json.dumps(value)}" for key, value in fit.items()),
        "",
        "[suggestion_reward]",
        "product = [",
        *(f"  {_toml(terms[d])}," for d in DIMENSIONS),
        "]",
        "",
        "[set_reward]",
        'product = ["format", { mean_over = "reward" }]',
        "",
    ]
    return "\n".join(lines)


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
        f"packaged `dev.jsonl`, {len(_cases('dev.jsonl'))}, and the held-out queries of "
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
        lines += [
            "",
            f"Heads: `{json.dumps(reports[0]['heads'])}`; judge {reports[0]['judge_model']}.",
        ]
    return "\n".join(lines) + "\n"
