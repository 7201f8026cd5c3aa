"""Judge evaluation against labeled cases, and the paper's policy metrics. Pure functions.

Per dimension, a judge score s in [0, 1] passes when ``s >= threshold`` (0.5 unless calibrated).
One confusion matrix per dimension gives agreement, precision and recall of the *fails* class
(label 0, the one operators care about), and Cohen's kappa; ROC AUC ranks the soft scores
against the labels (1 = pass), per dimension and for the product reward against "passes all
three". The statistics are scikit-learn's; everything a report shows derives from the same
judged cases, so it stays consistent. Part of the ``server`` and ``eval`` extras.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import roc_curve as _sk_roc_curve

from eqs_reward.types import DIMENSIONS, SuggestionScore

__all__ = [
    "CaseResult",
    "Confusion",
    "confusion",
    "evaluate",
    "fit_threshold",
    "json_safe",
    "paper_metrics",
    "roc_auc",
    "roc_curve",
    "summarise_runs",
]


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts with label 1 = passes (``tp``: pass judged pass; ``tn``: fail judged fail) and the
    statistics of the same judged cases."""

    tp: int
    fp: int
    fn: int
    tn: int
    agreement: float
    kappa: float
    fail_precision: float  # of the cases the judge failed, the share people failed too
    fail_recall: float  # of the cases people failed, the share the judge caught

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> Confusion:
    """The confusion matrix and statistics of judging ``score >= threshold`` as a pass."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels for {len(scores)} scores")
    if not labels:
        return Confusion(0, 0, 0, 0, math.nan, math.nan, math.nan, math.nan)
    judged = [1 if s >= threshold else 0 for s in scores]
    (tp, fn), (fp, tn) = confusion_matrix(labels, judged, labels=[1, 0]).tolist()
    # Kappa is undefined only when both sides give one and the same class to every case: that is
    # full agreement, reported as 1 (sklearn would warn and substitute the same value).
    same_single_class = len(set(labels) | set(judged)) == 1
    kappa = 1.0 if same_single_class else float(cohen_kappa_score(labels, judged, labels=[0, 1]))
    return Confusion(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        agreement=float(accuracy_score(labels, judged)),
        kappa=kappa,
        fail_precision=float(
            precision_score(labels, judged, pos_label=0, labels=[0, 1], zero_division=math.nan)
        ),
        fail_recall=float(
            recall_score(labels, judged, pos_label=0, labels=[0, 1], zero_division=math.nan)
        ),
    )


def _both_classes(labels: Sequence[int]) -> bool:
    return any(labels) and not all(labels)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """P(score of a random pass > score of a random fail), ties counting half. NaN when one
    class is missing."""
    if not _both_classes(labels):
        return math.nan
    return float(roc_auc_score(labels, scores))


def roc_curve(labels: Sequence[int], scores: Sequence[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) points, thresholds from high to low."""
    if not _both_classes(labels):
        return [(0.0, 0.0), (1.0, 1.0)]
    fpr, tpr, _ = _sk_roc_curve(labels, scores)
    return [(float(f), float(t)) for f, t in zip(fpr, tpr, strict=True)]


def fit_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The pass threshold with the best agreement on these cases (ties: the one closest to
    0.5). Candidates are midpoints between consecutive distinct scores, 0.5, and just outside
    the range. Vectorised: calibration fits thousands of cases."""
    if not scores:
        return 0.5
    values = np.asarray(scores, dtype=float)
    passes = np.asarray(labels, dtype=bool)
    distinct = np.unique(values)
    candidates = np.unique(
        np.concatenate(
            [
                [0.5, distinct[0] - 1e-9, distinct[-1] + 1e-9],
                (distinct[:-1] + distinct[1:]) / 2,
            ]
        )
    )
    # For each threshold t: agreement = #(pass and s >= t) + #(fail and s < t).
    pass_scores, fail_scores = np.sort(values[passes]), np.sort(values[~passes])
    judged_pass_of_passes = len(pass_scores) - np.searchsorted(pass_scores, candidates, "left")
    judged_fail_of_fails = np.searchsorted(fail_scores, candidates, "left")
    agreement = (judged_pass_of_passes + judged_fail_of_fails) / len(values)
    best = np.flatnonzero(agreement == agreement.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One labeled case and the judge's scores for it."""

    id: str
    context: dict[str, Any]
    suggestion: str
    labels: dict[str, int]
    scores: dict[str, float] | None  # None: the judge failed on it
    failure: str | None = None  # why, when it failed

    @classmethod
    def scored(
        cls,
        id: str,
        context: dict[str, Any],
        suggestion: str,
        labels: dict[str, int],
        score: SuggestionScore,
    ) -> CaseResult:
        """A labeled case with the service's score of it (scores None unless it was judged)."""
        scores = None
        if score.status == "ok":
            scores = {d: float(score.dimension(d) or 0.0) for d in DIMENSIONS}
        failure = None if scores else (score.reason or score.status)
        return cls(id, context, suggestion, labels, scores, failure)


def evaluate(
    cases: Sequence[CaseResult], thresholds: dict[str, float] | None = None, worst: int = 5
) -> dict[str, Any]:
    """The report of one run: per dimension and for the product reward."""
    thresholds = thresholds or dict.fromkeys(DIMENSIONS, 0.5)
    judged = [c for c in cases if c.scores is not None]
    reasons: dict[str, int] = {}
    for c in cases:
        if c.scores is None:
            reasons[c.failure or "failed"] = reasons.get(c.failure or "failed", 0) + 1
    report: dict[str, Any] = {
        "cases": len(cases),
        "judged": len(judged),
        "failed": len(cases) - len(judged),
        "failure_reasons": reasons,
        "thresholds": thresholds,
        "dimensions": {},
    }
    for dimension in DIMENSIONS:
        labels = [c.labels[dimension] for c in judged]
        scores = [c.scores[dimension] for c in judged if c.scores]
        matrix = confusion(labels, scores, thresholds[dimension])
        report["dimensions"][dimension] = {
            **matrix.as_dict(),
            "auc": roc_auc(labels, scores),
            "roc": roc_curve(labels, scores),
            "positive_rate_labels": sum(labels) / len(labels) if labels else math.nan,
        }
    all_pass = [int(all(c.labels[d] for d in DIMENSIONS)) for c in judged]
    products = [math.prod(c.scores[d] for d in DIMENSIONS) for c in judged if c.scores]
    report["reward"] = {"auc": roc_auc(all_pass, products), "roc": roc_curve(all_pass, products)}
    report["mean_agreement"] = _mean([report["dimensions"][d]["agreement"] for d in DIMENSIONS])
    report["mean_auc"] = _mean([report["dimensions"][d]["auc"] for d in DIMENSIONS])

    def miss(case: CaseResult) -> float:
        assert case.scores is not None
        return max(abs(case.scores[d] - case.labels[d]) for d in DIMENSIONS)

    report["worst"] = [
        {
            "id": c.id,
            "query": c.context.get("query"),
            "suggestion": c.suggestion,
            "labels": c.labels,
            "scores": c.scores,
            "miss": miss(c),
        }
        for c in sorted(judged, key=miss, reverse=True)[:worst]
    ]
    return report


def json_safe(value: Any) -> Any:
    """NaN (an undefined metric, e.g. AUC with one class) as null, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def summarise_runs(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread (population std) of the headline numbers over repeated runs."""

    def stats(values: list[float]) -> dict[str, float]:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return {"mean": math.nan, "std": math.nan}
        return {"mean": statistics.fmean(finite), "std": statistics.pstdev(finite)}

    out: dict[str, Any] = {"runs": len(reports), "dimensions": {}}
    for dimension in DIMENSIONS:
        out["dimensions"][dimension] = {
            key: stats([r["dimensions"][dimension][key] for r in reports])
            for key in ("agreement", "kappa", "auc", "fail_precision", "fail_recall")
        }
    out["reward_auc"] = stats([r["reward"]["auc"] for r in reports])
    return out


# -- the paper's policy metrics (QualEQS Table 1) ------------------------------------------------
def paper_metrics(
    rows: Sequence[dict[str, Any]], thresholds: dict[str, float] | None = None
) -> dict[str, Any]:
    """Strict Accuracy (share of contexts whose suggestions all pass all three criteria), Valid
    Rate (share of suggestions passing all three), per-dimension pass rates; also by intent.

    ``rows``: ``{"context": {...}, "scores": [{"answerability": s, ...} | None, ...]}``; a
    suggestion the judge failed on counts as not passing.
    """
    thresholds = thresholds or dict.fromkeys(DIMENSIONS, 0.5)

    def passes(score: dict[str, float] | None, dimension: str) -> bool:
        return score is not None and score[dimension] >= thresholds[dimension]

    def compute(subset: Sequence[dict[str, Any]]) -> dict[str, Any]:
        suggestions = [s for r in subset for s in r["scores"]]
        valid = [all(passes(s, d) for d in DIMENSIONS) for s in suggestions]
        strict = [
            bool(r["scores"]) and all(all(passes(s, d) for d in DIMENSIONS) for s in r["scores"])
            for r in subset
        ]
        return {
            "contexts": len(subset),
            "suggestions": len(suggestions),
            "strict_accuracy": sum(strict) / len(strict) if strict else math.nan,
            "valid_rate": sum(valid) / len(valid) if valid else math.nan,
            "pass_rates": {
                d: (
                    sum(passes(s, d) for s in suggestions) / len(suggestions)
                    if suggestions
                    else math.nan
                )
                for d in DIMENSIONS
            },
        }

    report = compute(rows)
    intents = sorted({r["context"].get("intent") for r in rows if r["context"].get("intent")})
    report["by_intent"] = {
        intent: compute([r for r in rows if r["context"].get("intent") == intent])
        for intent in intents
    }
    report["thresholds"] = thresholds
    return report
