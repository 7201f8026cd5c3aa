"""The evaluation arithmetic: internal consistency, known values, and the paper's metrics."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eqs_reward.evaluation import (
    DIMENSIONS,
    CaseResult,
    confusion,
    evaluate,
    fit_threshold,
    paper_metrics,
    roc_auc,
    roc_curve,
    summarise_runs,
)

labels_scores = st.lists(
    st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=40
)


def test_known_confusion_kappa_and_fail_class() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.3, 0.4, 0.2]
    m = confusion(labels, scores)
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 1, 5)
    assert m.agreement == pytest.approx(0.8)
    assert m.fail_precision == pytest.approx(5 / 6) and m.fail_recall == pytest.approx(5 / 6)
    # kappa by hand: po 0.8, judge pass 0.4, label pass 0.4 -> pe 0.16 + 0.36 = 0.52
    assert m.kappa == pytest.approx((0.8 - 0.52) / (1 - 0.52))


@given(labels_scores)
def test_kappa_and_agreement_come_from_the_same_matrix(pairs: list[tuple[int, float]]) -> None:
    labels, scores = [p[0] for p in pairs], [p[1] for p in pairs]
    m = confusion(labels, scores)
    assert m.n == len(pairs)
    assert m.agreement == pytest.approx((m.tp + m.tn) / m.n)
    n = m.n
    pe = ((m.tp + m.fp) * (m.tp + m.fn) + (m.tn + m.fn) * (m.tn + m.fp)) / n**2
    if pe < 1:
        assert m.kappa == pytest.approx((m.agreement - pe) / (1 - pe))
    assert -1.0 - 1e-9 <= m.kappa <= 1.0 + 1e-9


def test_auc_extremes_and_curve() -> None:
    labels = [0, 0, 1, 1, 0, 1]
    perfect = [0.1, 0.2, 0.8, 0.9, 0.3, 0.7]
    assert roc_auc(labels, perfect) == 1.0
    assert roc_auc(labels, [1 - s for s in perfect]) == 0.0
    assert roc_auc(labels, [0.5] * 6) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    curve = roc_curve(labels, perfect)
    assert curve[0] == (0.0, 0.0) and curve[-1] == (1.0, 1.0)
    assert (0.0, 1.0) in curve  # a perfect scorer reaches the top-left corner


@given(labels_scores)
def test_auc_is_symmetric(pairs: list[tuple[int, float]]) -> None:
    labels, scores = [p[0] for p in pairs], [p[1] for p in pairs]
    auc = roc_auc(labels, scores)
    if not math.isnan(auc):
        assert roc_auc(labels, [-s for s in scores]) == pytest.approx(1 - auc)


def test_fit_threshold_finds_the_separating_point() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.70, 0.72, 0.74, 0.80, 0.85, 0.90]  # a judge that says "pass" to everything
    threshold = fit_threshold(labels, scores)
    assert 0.74 < threshold < 0.80
    assert confusion(labels, scores, threshold).agreement == 1.0
    assert confusion(labels, scores, 0.5).agreement == 0.5


def case(
    i: int, labels: tuple[int, int, int], scores: tuple[float, float, float] | None
) -> CaseResult:
    return CaseResult(
        id=f"c{i}",
        context={"query": "q"},
        suggestion=f"s{i}",
        labels=dict(zip(DIMENSIONS, labels, strict=True)),
        scores=None if scores is None else dict(zip(DIMENSIONS, scores, strict=True)),
    )


def test_evaluate_report_is_consistent() -> None:
    cases = [
        case(0, (1, 1, 1), (0.9, 0.9, 0.9)),
        case(1, (1, 1, 0), (0.9, 0.8, 0.2)),
        case(2, (0, 1, 0), (0.7, 0.9, 0.1)),
        case(3, (1, 0, 1), None),
    ]
    report = evaluate(cases)
    assert report["judged"] == 3 and report["failed"] == 1
    a = report["dimensions"]["answerability"]
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (2, 1, 0, 0)
    assert report["dimensions"]["information_gain"]["agreement"] == 1.0
    assert report["reward"]["auc"] == 1.0  # the all-pass case has the highest product
    assert report["worst"][0]["id"] == "c2" and report["worst"][0]["miss"] == pytest.approx(0.7)
    runs = summarise_runs([report, report])
    assert runs["dimensions"]["answerability"]["agreement"] == {
        "mean": pytest.approx(a["agreement"]),
        "std": 0.0,
    }


def test_paper_metrics_match_a_hand_computed_fixture() -> None:
    ok = {"answerability": 1.0, "factuality": 1.0, "information_gain": 1.0}
    no_gain = {**ok, "information_gain": 0.0}
    rows = [
        {
            "context": {"query": "router", "intent": "product_recommendation"},
            "scores": [ok, ok, ok],
        },  # strict: yes, 3 valid
        {
            "context": {"query": "return policy", "intent": "platform_qa"},
            "scores": [ok, no_gain, ok],
        },  # strict: no, 2 valid
        {
            "context": {"query": "flowers", "intent": "product_recommendation"},
            "scores": [ok, None, {**ok, "factuality": 0.3}],
        },  # strict: no, 1 valid
    ]
    report = paper_metrics(rows)
    assert report["strict_accuracy"] == pytest.approx(1 / 3)
    assert report["valid_rate"] == pytest.approx(6 / 9)
    assert report["pass_rates"] == {
        "answerability": pytest.approx(8 / 9),
        "factuality": pytest.approx(7 / 9),
        "information_gain": pytest.approx(7 / 9),
    }
    recommendation = report["by_intent"]["product_recommendation"]
    assert recommendation["strict_accuracy"] == 0.5 and recommendation["valid_rate"] == 4 / 6
    assert report["by_intent"]["platform_qa"]["valid_rate"] == pytest.approx(2 / 3)
    strict = paper_metrics(rows, {"answerability": 0.5, "factuality": 0.2, "information_gain": 0.5})
    assert strict["valid_rate"] == pytest.approx(7 / 9)  # calibrated thresholds apply
