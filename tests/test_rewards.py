"""The reward math: exact values on hand-computed cases, and properties over random inputs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eqs_reward.rewards import (
    disagreement,
    fold,
    format_problem,
    format_reward,
    mean,
    parse_completion,
    set_reward,
    suggestion_reward,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
rewards_list = st.lists(unit, min_size=1, max_size=16)


def test_contract_example_numbers() -> None:
    # The contract's example: rewards (1, 1, 0) -> r_q 0.6667 and u_q 0.2222.
    rewards = [1.0, 1.0, 0.0]
    assert set_reward(1.0, rewards) == pytest.approx(2 / 3)
    assert disagreement(rewards) == pytest.approx(2 / 9)


def test_product_and_zeroing() -> None:
    assert suggestion_reward(1, 1, 1) == 1
    assert suggestion_reward(1, 0, 1) == 0
    assert suggestion_reward(0.5, 0.5, 0.8) == pytest.approx(0.2)


def test_empty_set_earns_nothing() -> None:
    assert mean([]) == 0.0
    assert set_reward(1.0, []) == 0.0
    assert disagreement([]) == 0.0


@given(unit, unit, unit)
def test_product_in_unit_interval_and_bounded_by_each_dimension(
    a: float, f: float, i: float
) -> None:
    r = suggestion_reward(a, f, i)
    assert 0.0 <= r <= min(a, f, i) + 1e-12


@given(rewards_list)
def test_set_reward_bounds(rewards: list[float]) -> None:
    assert set_reward(0.0, rewards) == 0.0
    value = set_reward(1.0, rewards)
    assert min(rewards) - 1e-12 <= value <= max(rewards) + 1e-12


@given(rewards_list)
def test_disagreement_is_population_variance(rewards: list[float]) -> None:
    u = disagreement(rewards)
    mu = sum(rewards) / len(rewards)
    expected = sum(r * r for r in rewards) / len(rewards) - mu * mu
    assert u >= 0.0
    assert u <= 0.25 + 1e-12  # variance of values in [0, 1] is at most 1/4
    assert math.isclose(u, expected, abs_tol=1e-9)


@given(rewards_list, st.permutations(range(16)))
def test_disagreement_ignores_order(rewards: list[float], order: list[int]) -> None:
    shuffled = [rewards[i] for i in order if i < len(rewards)]
    assert math.isclose(disagreement(rewards), disagreement(shuffled), abs_tol=1e-12)


@given(unit, st.integers(min_value=1, max_value=16))
def test_identical_rewards_have_no_disagreement(value: float, k: int) -> None:
    assert disagreement([value] * k) == pytest.approx(0.0, abs=1e-12)


def test_fold_detects_near_duplicates() -> None:
    assert fold("Any TP-Link routers?") == fold("any tp link routers")
    assert fold("  Wi-Fi 6 ") == fold("wi fi 6")


def test_format_rules() -> None:
    good = ["Under $50?", "With Wi-Fi 6?", "From TP-Link?"]
    assert format_reward(good, 3, 30) == 1.0
    assert format_problem(good[:2], 3, 30) == "expected exactly 3 suggestions, got 2"
    assert format_reward(good[:2], None, 30) == 1.0  # k unset: any count
    assert format_problem(["a", "", "b"], 3, 30) == "suggestion 1 is empty"
    assert "repeats" in (format_problem(["Wi-Fi 6?", "wi fi 6", "x"], 3, 30) or "")
    long = " ".join(["word"] * 31)
    assert "more than 30 tokens" in (format_problem([long, "a", "b"], 3, 30) or "")
    assert format_reward(good, 3, 30, well_formed=False) == 0.0


def test_parse_completion_strict_and_recovered() -> None:
    exact = parse_completion('{"options": ["a", "b", "c"]}')
    assert exact.well_formed and exact.suggestions == ["a", "b", "c"]
    fenced = parse_completion('```json\n{"options": ["a", "b", "c"]}\n```')
    assert fenced.well_formed and fenced.suggestions == ["a", "b", "c"]
    sloppy = parse_completion('Sure! Here you go: {"options": ["a", "b"]} hope it helps')
    assert not sloppy.well_formed and sloppy.suggestions == ["a", "b"]
    assert parse_completion("not json at all").suggestions == []
    assert not parse_completion('{"options": "a"}').well_formed
    mixed = parse_completion('{"options": ["a", 3, "c"]}')
    assert not mixed.well_formed and mixed.suggestions == ["a", "c"]
    assert not parse_completion('["a", "b", "c"]').well_formed
    truncated = parse_completion('{"options": ["Any TP-Link under $50?", "With Wi-Fi 6?", "Fro')
    assert not truncated.well_formed and truncated.suggestions == [
        "Any TP-Link under $50?",
        "With Wi-Fi 6?",
    ]
    assert "incomplete" in (truncated.problem or "")


@given(st.lists(st.text(min_size=1, max_size=40), min_size=0, max_size=6))
def test_parse_completion_round_trips_any_options(options: list[str]) -> None:
    parsed = parse_completion(json.dumps({"options": options}))
    assert parsed.well_formed
    assert parsed.suggestions == options


@given(st.text(max_size=200))
def test_parse_completion_never_raises(text: str) -> None:
    parsed = parse_completion(text)
    assert isinstance(parsed.suggestions, list)
