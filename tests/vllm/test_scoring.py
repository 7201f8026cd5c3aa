"""Scoring through the real judge: binary and soft verdicts from its logprobs, one judge call per
distinct suggestion, and the simulated shopper head."""

from __future__ import annotations

import httpx
import pytest

from tests._helpers import ServerProcess, metric
from tests.vllm.conftest import README_BODY

pytestmark = pytest.mark.vllm


def test_readme_example_is_graded_by_the_real_judge(embedded: ServerProcess) -> None:
    response = httpx.post(embedded.url + "/v1/score", json=README_BODY, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["meta"]["judge_model"] == "smollm2-135m-instruct"
    assert data["meta"]["prompt_version"] == "qualeqs-v2"
    assert [r["id"] for r in data["results"]] == ["router-1", "flowers-1"]
    for result in data["results"]:
        assert result["status"] == "ok" and result["format_reward"] == 1.0
        rewards = [s["reward"] for s in result["suggestions"]]
        assert len(rewards) == 3
        for suggestion in result["suggestions"]:
            for dimension in ("answerability", "factuality", "information_gain"):
                assert suggestion[dimension] in (0.0, 1.0)
        mean = sum(rewards) / 3
        assert result["reward"] == pytest.approx(mean)
        assert result["disagreement"] == pytest.approx(sum((r - mean) ** 2 for r in rewards) / 3)


def test_soft_scores_come_from_real_logprobs(embedded: ServerProcess) -> None:
    body = {**README_BODY, "options": {"k": 3, "score_mode": "soft"}}
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=120)
    assert response.status_code == 200
    values = [
        s[d]
        for r in response.json()["results"]
        for s in r["suggestions"]
        for d in ("answerability", "factuality", "information_gain")
    ]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert any(0.0 < v < 1.0 for v in values), values  # probabilities, not hard verdicts
    # Every real answer passes the logprob checks (issue 20): none is read as malformed.
    statuses = [s["status"] for r in response.json()["results"] for s in r["suggestions"]]
    assert set(statuses) == {"ok"}, response.text


def test_repeated_suggestions_cost_one_real_judge_call_each(embedded: ServerProcess) -> None:
    before = metric(embedded.url, "eqs_reward_judge_calls_total")
    group = [
        "Any cordless drills under $60 with two batteries?",
        "Which drills have a hammer mode for concrete?",
        "Do you sell a drill that runs forever without charging?",
    ]
    items = [{"context": {"query": "power drill"}, "suggestions": group} for _ in range(8)]
    response = httpx.post(embedded.url + "/v1/score", json={"items": items}, timeout=300)
    assert response.status_code == 200
    assert all(r["status"] == "ok" for r in response.json()["results"])
    assert metric(embedded.url, "eqs_reward_judge_calls_total") - before == 3


def test_the_simulated_shopper_head_runs_on_the_real_judge(embedded: ServerProcess) -> None:
    """The blended recipe on the real embedded judge: the shopper's P(tap) from the digit's
    logprobs, GQR's list formula over them, one judge call per head and new suggestion."""
    calls = "eqs_reward_judge_calls_total"
    before = metric(embedded.url, calls)
    body = {
        "items": [
            {
                "context": {"query": "I want to buy a router", "profile": "gamer, big flat"},
                "suggestions": [
                    "Which Wi-Fi 6 mesh routers cover a 150 square meter flat?",
                    "What kind of router do you want to buy?",
                    "Any ASUS gaming routers under $200?",
                ],
            }
        ],
        "options": {"k": 3, "score_mode": "soft", "recipe": "qualeqs-blend"},
    }
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()
    (result,) = data["results"]
    assert result["status"] == "ok" and data["meta"]["recipe"]["id"] == "qualeqs-blend"
    taps = [s["signals"]["shopper.tap"] for s in result["suggestions"]]
    assert all(0.0 <= t <= 1.0 for t in taps)
    assert any(0.0 < t < 1.0 for t in taps), taps  # a probability, not a hard digit
    any_tap = 1 - (1 - taps[0]) * (1 - taps[1]) * (1 - taps[2])
    assert result["set_signals"]["shopper.any_tap"] == pytest.approx(any_tap)
    echo = result["suggestions"][1]["signals"]["exclusivity.novelty"]
    assert echo < 0.2  # the echo of the query, whatever the small judge thought of it
    assert metric(embedded.url, calls) - before == 6  # 3 judge + 3 shopper calls
    head = 'eqs_reward_head_duration_seconds_count{head="shopper"}'
    assert metric(embedded.url, head) >= 3
