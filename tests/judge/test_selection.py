"""The few-shot selection under a token budget: deterministic, bounded, every failure kind kept."""

from __future__ import annotations

from eqs_reward.judge import estimate_tokens, select_examples
from eqs_reward.judge.cases import ExampleIn, make_example
from eqs_reward.types import DIMENSIONS


def example(n: int, labels: tuple[int, int, int]) -> ExampleIn:
    a, f, i = labels
    return ExampleIn.model_validate(
        {
            "context": {"query": f"query {n}"},
            "suggestion": f"Suggestion number {n}?",
            "labels": {"answerability": a, "factuality": f, "information_gain": i},
        }
    )


def test_selection_under_budget_is_deterministic_and_covers_failures() -> None:
    examples = tuple(
        make_example(example(n, labels))
        for n, labels in enumerate([(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1)] * 10)
    )
    total = sum(estimate_tokens(e) for e in examples)
    assert select_examples(examples, total) == examples  # fits: everything, same order
    assert select_examples(examples, 0) == examples  # 0: no limit
    budget = total // 4
    chosen = select_examples(examples, budget)
    assert chosen == select_examples(examples, budget)
    assert sum(estimate_tokens(e) for e in chosen) <= budget
    positions = [examples.index(e) for e in chosen]
    assert positions == sorted(positions)  # bank order kept
    for dimension in DIMENSIONS:
        assert any(getattr(e.labels, dimension) == 0 for e in chosen), dimension
    assert examples[-1] in chosen  # newest first
    tiny = select_examples(examples, 1)  # even a tiny budget keeps each failure kind
    assert {d for d in DIMENSIONS for e in tiny if getattr(e.labels, d) == 0} == set(DIMENSIONS)
