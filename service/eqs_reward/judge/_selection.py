"""Which examples of a bank version the judge sees when they outgrow the prompt's token budget.

Deterministic for a version (it depends only on the version's ordered examples), so every replica
and every call build the same prompt, and vLLM's prefix cache keeps serving it.
"""

from __future__ import annotations

from eqs_reward.judge.cases import Example
from eqs_reward.types import DIMENSIONS

__all__ = ["estimate_tokens", "select_examples"]


def estimate_tokens(example: Example) -> int:
    """A cheap, deterministic token estimate of one rendered example (about 4 characters a
    token, plus the fixed framing of the two turns)."""
    text = example.context.query + example.suggestion + (example.context.profile or "")
    text += "".join(t.content for t in example.context.history)
    return 40 + len(text) // 4


def select_examples(examples: tuple[Example, ...], budget_tokens: int) -> tuple[Example, ...]:
    """Which examples of a version the judge sees when they outgrow ``budget_tokens``.

    Deterministic for a version (it depends only on the version's ordered examples):
    1. Reserve, for each dimension, the newest example that fails it, then the newest example
       that passes all three, so every kind of failure (and a positive) stays represented.
    2. Fill the rest of the budget with the remaining examples, newest first (newest = the
       latest online bad cases, the ones operators just taught).
    3. Show the chosen examples in bank order, so a version that fits keeps its exact prefix.
    Within the budget, nothing is dropped and appends only extend the prompt.
    """
    if budget_tokens <= 0 or sum(estimate_tokens(e) for e in examples) <= budget_tokens:
        return examples
    newest_first = list(reversed(examples))
    chosen: set[str] = set()
    used = 0
    reserved: list[Example] = []
    for dimension in DIMENSIONS:
        failing = next((e for e in newest_first if getattr(e.labels, dimension) == 0), None)
        if failing is not None:
            reserved.append(failing)
    positive = next(
        (e for e in newest_first if all(getattr(e.labels, d) == 1 for d in DIMENSIONS)), None
    )
    if positive is not None:
        reserved.append(positive)
    for example in [*reserved, *newest_first]:
        if example.id in chosen:
            continue
        cost = estimate_tokens(example)
        if used + cost > budget_tokens and example not in reserved:
            continue
        chosen.add(example.id)
        used += cost
    return tuple(e for e in examples if e.id in chosen)
