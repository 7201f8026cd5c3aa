"""Judge evaluation against labeled cases, and the paper's policy metrics. Pure functions.

Per dimension, a judge score s in [0, 1] passes when ``s >= threshold`` (0.5 unless calibrated).
One confusion matrix per dimension gives agreement, precision and recall of the *fails* class
(label 0, the one operators care about), and Cohen's kappa; ROC AUC ranks the soft scores
against the labels (1 = pass), per dimension and for the product reward against "passes all
three". Everything a report shows derives from the same counts, so it stays consistent.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

DIMENSIONS = ("answerability", "factuality", "information_gain")


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts with label 1 = passes. ``tp``: pass judged pass; ``tn``: fail judged fail."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def agreement(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else math.nan

    @property
    def fail_precision(self) -> float:
        """Of the cases the judge failed, the share people failed too."""
        judged_fail = self.tn + self.fn
        return self.tn / judged_fail if judged_fail else math.nan

    @property
    def fail_recall(self) -> float:
        """Of the cases people failed, the share the judge caught."""
        labeled_fail = self.tn + self.fp
        return self.tn / labeled_fail if labeled_fail else math.nan

    @property
    def kappa(self) -> float:
        """Cohen's kappa from these counts: agreement beyond what the marginals give by chance."""
        n = self.n
        if not n:
            return math.nan
        observed = self.agreement
        judge_pass, label_pass = (self.tp + self.fp) / n, (self.tp + self.fn) / n
        expected = judge_pass * label_pass + (1 - judge_pass) * (1 - label_pass)
        if expected >= 1.0:
            return 1.0 if observed >= 1.0 else 0.0
        return (observed - expected) / (1 - expected)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "agreement": self.agreement,
            "fail_precision": self.fail_precision,
            "fail_recall": self.fail_recall,
            "kappa": self.kappa,
        }


def confusion(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> Confusion:
    tp = fp = fn = tn = 0
    for label, score in zip(labels, scores, strict=True):
        judged = 1 if score >= threshold else 0
        if judged and label:
            tp += 1
        elif judged:
            fp += 1
        elif label:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, fn, tn)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """P(score of a random pass > score of a random fail), ties counting half (Mann-Whitney).
    NaN when one class is missing."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return math.nan
    wins = 0.0
    for p in positives:
        for q in negatives:
            wins += 1.0 if p > q else 0.5 if p == q else 0.0
    return wins / (len(positives) * len(negatives))


def roc_curve(labels: Sequence[int], scores: Sequence[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) points, thresholds from high to low."""
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return [(0.0, 0.0), (1.0, 1.0)]
    points = [(0.0, 0.0)]
    for threshold in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels, strict=True) if y and s >= threshold)
        fp = sum(1 for s, y in zip(scores, labels, strict=True) if not y and s >= threshold)
        points.append((fp / negatives, tp / positives))
    if points[-1] != (1.0, 1.0):
        points.append((1.0, 1.0))
    return points


def fit_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The pass threshold with the best agreement on these cases (ties: the one closest to
    0.5). Candidates are midpoints between consecutive distinct scores, plus 0.5."""
    distinct = sorted(set(scores))
    candidates = {0.5} | {(a + b) / 2 for a, b in itertools.pairwise(distinct)}
    candidates |= {distinct[0] - 1e-9, distinct[-1] + 1e-9} if distinct else set()

    def quality(t: float) -> tuple[float, float]:
        return (confusion(labels, scores, t).agreement, -abs(t - 0.5))

    return max(sorted(candidates), key=quality)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One labeled case and the judge's scores for it."""

    id: str
    context: dict[str, Any]
    suggestion: str
    labels: dict[str, int]
    scores: dict[str, float] | None  # None: the judge failed on it


def evaluate(
    cases: Sequence[CaseResult], thresholds: dict[str, float] | None = None, worst: int = 5
) -> dict[str, Any]:
    """The report of one run: per dimension and for the product reward."""
    thresholds = thresholds or dict.fromkeys(DIMENSIONS, 0.5)
    judged = [c for c in cases if c.scores is not None]
    report: dict[str, Any] = {
        "cases": len(cases),
        "judged": len(judged),
        "failed": len(cases) - len(judged),
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
        mean = sum(finite) / len(finite)
        return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))}

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
