"""A click model learned from the operator's impression logs (GQR's click predictor).

Logs are JSONL rows ``{"context": {...} | "query": "...", "suggestion": "...", "position": 0,
"clicked": true}``: one suggestion shown at a position (0 = first), and whether it was tapped.
``fit`` trains scikit-learn's logistic regression over hashed text features (the suggestion's
words and word pairs, the query's words, whether it states a budget or names something
capitalised, its length) and the position, holds out a fifth of the contexts, and reports ROC AUC,
Brier score and a calibration table. It refuses to serve noise: fewer than ``min_clicks`` clicks
(or non-clicks) is an error that says so.

The model is stored as JSON (coefficients, intercept, the feature settings), never pickled: a
model file cannot run code. Versions are files ``v<N>.json`` in the store's folder; the newest is
served. ``ClickModel.predict`` gives P(click) for (query, suggestion, position).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from eqs_reward._jsonl import read_jsonl

__all__ = [
    "ClickLogError",
    "ClickModel",
    "ClickStore",
    "Impression",
    "fit_click_model",
    "read_impressions",
]

FEATURES = 1 << 18
MAX_POSITION = 9
_BUDGET = re.compile(r"[$€£₱¥₹]\s?\d|\d\s?(usd|eur|php|dollars?|euros?|pesos?)\b|\b(under|below)\s")
_NAME = re.compile(r"(?<!^)(?<![.?!]\s)\b[A-Z][A-Za-z0-9-]+")


class ClickLogError(ValueError):
    """Logs that cannot train a model (bad rows, or too few clicks), with why."""


@dataclass(frozen=True, slots=True)
class Impression:
    query: str
    suggestion: str
    position: int
    clicked: bool | None = None


def read_impressions(path: Path) -> list[Impression]:
    """Impressions from JSONL, or ``ClickLogError`` naming every bad row (up to 20)."""
    out: list[Impression] = []
    problems: list[str] = []
    for row, raw in enumerate(read_jsonl(path), start=1):
        if set(raw) == {"_comment"}:
            continue
        context = raw.get("context")
        query = context.get("query") if isinstance(context, dict) else raw.get("query")
        suggestion, position, clicked = (
            raw.get("suggestion"),
            raw.get("position"),
            raw.get("clicked"),
        )
        if not isinstance(query, str) or not query.strip():
            problems.append(f"row {row}, query: missing (give 'query' or 'context.query')")
        if not isinstance(suggestion, str) or not suggestion.strip():
            problems.append(f"row {row}, suggestion: missing or not text")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            problems.append(f"row {row}, position: a non-negative integer (0 = first shown)")
        if clicked not in (True, False, 0, 1) or isinstance(clicked, float):
            problems.append(f"row {row}, clicked: true or false")
        if len(problems) >= 20:
            break
        if not problems and isinstance(position, int):
            out.append(Impression(str(query), str(suggestion), position, bool(clicked)))
    if problems:
        raise ClickLogError(f"{path}: bad rows; nothing was fitted\n  " + "\n  ".join(problems))
    return out


def _documents(rows: Sequence[Impression]) -> list[str]:
    docs = []
    for r in rows:
        suggestion = r.suggestion.casefold()
        flags = [
            f"__pos{min(r.position, MAX_POSITION)}",
            f"__len{min(len(r.suggestion.split()) // 4, 5)}",
            "__budget" if _BUDGET.search(suggestion) else "__nobudget",
            "__named" if _NAME.search(r.suggestion) else "__unnamed",
            "__question" if r.suggestion.strip().endswith("?") else "__statement",
        ]
        query = " ".join(f"q_{w}" for w in re.findall(r"\w+", r.query.casefold()))
        docs.append(" ".join([suggestion, query, *flags]))
    return docs


def _vectorizer() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm="l2",
        token_pattern=r"(?u)\b\w+\b|[$€£₱¥₹]",
    )


@dataclass
class ClickModel:
    """A fitted model: what ``predict`` needs, and what the fit measured."""

    version: int
    coef: dict[int, float]  # hashed feature index -> weight (the non-zero ones)
    intercept: float
    report: dict[str, Any] = field(default_factory=dict)

    def predict(self, rows: Sequence[Impression]) -> list[float]:
        if not rows:
            return []
        matrix = _vectorizer().transform(_documents(rows)).tocsr()
        weights = np.zeros(FEATURES)
        for index, value in self.coef.items():
            weights[index] = value
        logits = matrix @ weights + self.intercept
        return [1.0 / (1.0 + math.exp(-float(x))) for x in logits]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "features": {"kind": "hashing-v1", "n_features": FEATURES},
            "intercept": self.intercept,
            "coef": {str(k): v for k, v in self.coef.items()},
            "report": self.report,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClickModel:
        features = data.get("features", {})
        if features != {"kind": "hashing-v1", "n_features": FEATURES}:
            raise ClickLogError(f"unsupported click model features: {features}")
        return cls(
            version=int(data["version"]),
            coef={int(k): float(v) for k, v in data["coef"].items()},
            intercept=float(data["intercept"]),
            report=dict(data.get("report", {})),
        )


def _split(rows: Sequence[Impression], seed: int) -> tuple[list[int], list[int]]:
    """A fifth of the contexts held out (all impressions of a query on one side)."""
    import random

    queries = sorted({r.query for r in rows})
    random.Random(seed).shuffle(queries)
    held = set(queries[: max(1, len(queries) // 5)])
    train = [n for n, r in enumerate(rows) if r.query not in held]
    test = [n for n, r in enumerate(rows) if r.query in held]
    return train, test


def fit_click_model(
    rows: Sequence[Impression], *, min_clicks: int = 100, seed: int = 0, version: int = 1
) -> ClickModel:
    """Fit, measure on held-out contexts, and refit on everything (see the module docstring)."""
    from sklearn.calibration import calibration_curve
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score

    clicks = sum(1 for r in rows if r.clicked)
    if clicks < min_clicks or len(rows) - clicks < min_clicks:
        raise ClickLogError(
            f"{len(rows)} impressions with {clicks} clicks: a click model needs at least "
            f"{min_clicks} clicks and {min_clicks} impressions without one (fewer would serve "
            "noise); keep QualEQS-only rewards until more are logged"
        )
    labels = np.array([1 if r.clicked else 0 for r in rows])
    matrix = _vectorizer().transform(_documents(rows))
    train, test = _split(rows, seed)
    if len(set(labels[test])) < 2 or len(set(labels[train])) < 2:
        raise ClickLogError("the held-out contexts have only clicks or only non-clicks")
    held_model = LogisticRegression(C=4.0, max_iter=2000)
    held_model.fit(matrix[train], labels[train])
    predicted = held_model.predict_proba(matrix[test])[:, 1]
    observed, expected = calibration_curve(labels[test], predicted, n_bins=5, strategy="quantile")
    report = {
        "impressions": len(rows),
        "clicks": clicks,
        "held_out_impressions": len(test),
        "held_out_roc_auc": float(roc_auc_score(labels[test], predicted)),
        "held_out_brier": float(brier_score_loss(labels[test], predicted)),
        "calibration": [
            {"predicted": float(p), "observed": float(o)}
            for p, o in zip(expected, observed, strict=True)
        ],
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    final = LogisticRegression(C=4.0, max_iter=2000)
    final.fit(matrix, labels)
    weights = final.coef_[0]
    coef = {int(i): float(weights[i]) for i in np.flatnonzero(weights)}
    return ClickModel(version, coef, float(final.intercept_[0]), report)


class ClickStore:
    """Versioned click models in a folder: ``v<N>.json``, the newest served."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (re.fullmatch(r"v(\d+)\.json", p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self) -> ClickModel | None:
        versions = self.versions()
        if not versions:
            return None
        path = self.folder / f"v{versions[-1]}.json"
        return ClickModel.from_json(json.loads(path.read_text(encoding="utf-8")))

    def save(self, model: ClickModel) -> Path:
        """Store as the next version (written aside, then renamed: never half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        model.version = (self.versions() or [0])[-1] + 1
        path = self.folder / f"v{model.version}.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(model.to_json()), encoding="utf-8")
        partial.rename(path)
        return path


def any_click(probabilities: Iterable[float]) -> float:
    """GQR's list formula: the chance that at least one suggestion is tapped."""
    missed = 1.0
    for p in probabilities:
        missed *= 1.0 - p
    return 1.0 - missed
