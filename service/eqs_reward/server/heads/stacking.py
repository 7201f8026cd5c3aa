"""The stacking of a fitted recipe (``qualeqs-taught``): fit on labeled cases, never on the
validation split.

Per dimension, a logistic stacker over the log-odds of the judge's soft score and of the taught
head's out-of-fold probability (query-grouped folds), its binary threshold (the stored
calibration) and the power of its probability in the product. The fitting cases are the
packaged training cases less the held-out queries (``heads.taught.held_out``) and less the
bank's examples (in the judge's prompt). ``eqs-reward fidelity fit`` and the service's
background refit (``eqs_reward.server.refit``) both fit here and write the recipe file here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import read_jsonl
from eqs_reward._resources import judge_cases_dir
from eqs_reward.evaluation import roc_auc
from eqs_reward.server.recipes import _STACKED_EPSILON, FitFor
from eqs_reward.types import DIMENSIONS, SuggestionScore

__all__ = [
    "POWER_GRID",
    "auc",
    "fit_cases",
    "fit_scored",
    "good_on_all",
    "oof_taught",
    "packaged_cases",
    "packaged_training",
    "stacking_cases",
    "write_recipe",
]


def packaged_cases(name: str) -> list[dict[str, Any]]:
    return read_jsonl(judge_cases_dir() / name)


def packaged_training() -> list[dict[str, Any]]:
    from eqs_reward.server.heads.taught import TRAINING_FILES

    return [case for name in TRAINING_FILES for case in packaged_cases(name)]


def fit_cases() -> list[dict[str, Any]]:
    """The training cases the taught head and the recipe's stacking are fit on."""
    from eqs_reward.server.heads.taught import held_out

    return [c for c in packaged_training() if not held_out(c["context"]["query"])]


def good_on_all(case: dict[str, Any]) -> int:
    return int(all(case["labels"][d] == 1 for d in DIMENSIONS))


def auc(labels: Sequence[int], values: Sequence[float]) -> float:
    if len(set(labels)) < 2 or len(set(values)) < 2:
        return math.nan
    return roc_auc(labels, values)


#: The powers a dimension's stacked probability may be raised to in the product (chosen per
#: dimension on out-of-fold product ROC AUC; 1 on a tie).
POWER_GRID = (0.25, 0.5, 1.0, 2.0)
#: Inverse L2 strength of the per-dimension stacker (two inputs, a few hundred rows).
STACKER_C = 1.0


async def oof_taught(
    cases: Sequence[dict[str, Any]], examples: Sequence[Any], head: Any
) -> dict[str, list[float]]:
    """The taught head's out-of-fold probabilities on ``cases`` (5 folds grouped by query),
    each fold's model fit and read through ``head`` (``TaughtHead.fit_cases`` and
    ``predict``; the service's, or one on the embedder the recipe is fit for, whose family
    the recipe names): the bank's examples plus the other folds."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    from eqs_reward.judge.cases import LabeledCase
    from eqs_reward.server.heads.taught import as_case

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
        "auc_judge": auc(labels, judge),
        "auc_taught": auc(labels, taught),
        "auc_stacked": auc(labels, list(oof)),
    }


def _powers(good: Sequence[int], oof: dict[str, list[float]]) -> dict[str, float]:
    """Per dimension, the power of its stacked probability in the product with the best
    out-of-fold product ROC AUC (nearest to 1 on a tie)."""
    import itertools

    def product_auc(powers: Sequence[float]) -> float:
        rewards = [
            math.prod(oof[d][n] ** p for d, p in zip(DIMENSIONS, powers, strict=True))
            for n in range(len(good))
        ]
        return auc(good, rewards)

    best = max(
        itertools.product(POWER_GRID, repeat=len(DIMENSIONS)),
        key=lambda powers: (round(product_auc(powers), 6), -sum(abs(math.log(p)) for p in powers)),
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
    oof = {d: fitted[d]["oof"] for d in DIMENSIONS}
    powers = _powers([good_on_all(cases[n]) for n in keep], oof)
    for d in DIMENSIONS:
        fitted[d]["power"] = powers[d]
        del fitted[d]["oof"]
    return {"cases": len(keep), "dimensions": fitted}


def write_recipe(path: Path, fit: dict[str, Any], target: FitFor, base_version: int = 0) -> int:
    """Write the recipe fitted for ``target`` to ``path`` (its id: the file's name); its
    version: the file's own when the terms are unchanged, else one more than the larger of the
    file's and ``base_version`` (scores are cached under a recipe's version: a new fit must not
    meet old entries)."""
    terms = {d: _stacked_term(d, fit["dimensions"][d]) for d in DIMENSIONS}
    version = _next_version(path, terms, base_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {**dataclasses.asdict(target), "cases": fit["cases"]}
    if base_version:  # a service's refit of a shipped recipe: which one (see server/refit.py)
        head["refit_of"] = base_version
    text = _recipe_text(path.stem, fit["dimensions"], terms, head, version)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
    return version


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
    """``fit``: the ``[fit]`` table (``FitFor``'s fields, cases; refit_of), dated."""
    date = f"{datetime.now(UTC):%Y-%m-%d}"
    fit = {**fit, "date": date}
    judge_model, prompt_version, cases = fit["judge_model"], fit["prompt_version"], fit["cases"]
    taught = fit["taught"]
    lines = [
        "# QualEQS with the taught head: per dimension, a logistic stacker over the judge's soft",
        "# score and the taught head's probability, fit on labels (not set by hand):",
        "#   eqs-reward fidelity fit  (against a service running the judge it is fit for)",
        f"# Fit {date} on {cases} packaged training cases (held-out queries",
        f"# and the bank's examples left out) for judge {judge_model}, prompt {prompt_version},",
        f"# taught head {taught};",
        "# out-of-fold ROC AUC per dimension (judge alone / taught alone / stacked):",
    ]
    for d in DIMENSIONS:
        f = fitted[d]
        lines.append(
            f"#   {d}: {f['auc_judge']:.3f} / {f['auc_taught']:.3f} / {f['auc_stacked']:.3f}"
        )
    lines += [
        "# threshold: the stored calibration (best balanced accuracy out of fold): where",
        "#   pass/fail measures cut (eqs-reward eval); not applied to the reward",
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
        "# What the stacking was fit for: the service refits it when its judge, prompt or",
        "# taught head (features, embedder) differ (EQS_REWARD_RECIPE_REFIT).",
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
