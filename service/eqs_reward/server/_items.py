"""One request item on its way through scoring: parsed, guarded and keyed, once.

``prepare`` reads a completion (or takes a list of suggestions), computes the format problem,
refuses what the guard refuses and what is past the per-item limit (the one place that limit is
applied inside scoring), normalises each suggestion once, and gives each LLM head's case its
cache key. The cases of the whole request are collected in ``cases``: a suggestion repeated
within a request is judged once.
"""

from __future__ import annotations

from dataclasses import dataclass

from eqs_reward.judge.cases import Context
from eqs_reward.rewards import format_problem, normalise_text, parse_completion
from eqs_reward.server._judge_pool import Case
from eqs_reward.server._plans import Plan
from eqs_reward.server.bank import BankVersion
from eqs_reward.server.cache import score_key
from eqs_reward.server.guard import Guard
from eqs_reward.server.schemas import ScoreItem, ScoreOptions
from eqs_reward.server.settings import Settings

__all__ = ["Item", "Slot", "prepare"]


@dataclass(slots=True)
class Slot:
    """One suggestion: refused (``reason``), or keyed per LLM head. ``normalised`` is the text
    the heads see (empty past the per-item limit: those are never scored)."""

    text: str
    reason: str | None
    keys: dict[str, str]
    normalised: str = ""


@dataclass(slots=True)
class Item:
    item: ScoreItem
    problem: str | None
    slots: list[Slot]
    group_key: str

    def batch(self) -> tuple[Context, list[str]]:
        """What a computed head scores: the item's context and its suggestions' texts."""
        return self.item.context, [s.normalised for s in self.slots if s.reason != "too_many"]


def prepare(
    item: ScoreItem,
    options: ScoreOptions,
    plan: Plan,
    bank_version: BankVersion,
    cases: dict[str, Case],
    *,
    guard: Guard,
    judge_model: str,
    judge_prompt: str,
    settings: Settings,
) -> Item:
    if item.completion is not None:
        parsed = parse_completion(item.completion, options.end_tokens)
        texts, well_formed, problem = parsed.suggestions, parsed.well_formed, parsed.problem
    else:
        texts, well_formed, problem = list(item.suggestions or []), True, None
    problem = problem or format_problem(
        texts, options.k, settings.max_suggestion_tokens, well_formed
    )
    context = item.context.as_judged()
    slots: list[Slot] = []
    # A raw completion can hold any number of options: past the per-item limit they are
    # refused, not judged (a list of suggestions is held to the limit by the HTTP layer).
    limit = settings.max_suggestions_per_item
    judge_mode = plan.recipe.judge_mode(options.score_mode)
    for index, text in enumerate(texts):
        if index >= limit:
            slots.append(Slot(text, "too_many", {}))
            continue
        suggestion = normalise_text(text)
        reason = guard.reason(text)
        if reason is not None:
            slots.append(Slot(text, reason, {}, suggestion))
            continue
        keys = {}
        for head in plan.llm_heads:
            key = score_key(
                judge_model=judge_model,
                versions=f"{head.version}+{guard.version}+{plan.recipe.key}",
                fewshot_version=bank_version.cache_id if head.uses_bank else "-",
                score_mode=judge_mode,
                context=context,
                suggestion=suggestion,
            )
            cases.setdefault(key, Case(head, context, suggestion))
            keys[head.name] = key
        slots.append(Slot(text, None, keys, suggestion))
    group_key = score_key(
        judge_model=judge_model,
        versions=f"{judge_prompt}+{plan.recipe.key}",
        fewshot_version=bank_version.cache_id,
        score_mode=f"{options.score_mode}/k={options.k}",
        context=context,
        suggestion="",
    )
    return Item(item, problem, slots, group_key)
