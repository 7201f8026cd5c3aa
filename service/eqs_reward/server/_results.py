"""A request item's result: the suggestions' signals and rewards under the recipe, the set's.

The data arrives here once per item: its prepared slots (``_items``), the judge calls'
outcomes by cache key (``_judge_pool``) and each computed head's results (``_plans``); what
leaves is the response's ``ItemResult``. Every suggestion and reward is counted in the metrics
here, in one place.
"""

from __future__ import annotations

from eqs_reward.rewards import disagreement
from eqs_reward.server._items import Item, Slot
from eqs_reward.server._judge_pool import Outcome
from eqs_reward.server._plans import Computed, Plan
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.recipes import HEAD_SET_SIGNALS, HEAD_SIGNALS
from eqs_reward.types import ItemResult, OnFailure, ResultStatus, SuggestionScore

__all__ = ["item_result"]

#: The judge calls' outcomes by cache key, the computed heads' results by head name.
Outcomes = dict[str, Outcome]
ByHead = dict[str, Computed]


def item_result(
    plan: Plan,
    prepared: Item,
    outcomes: Outcomes,
    computed: ByHead,
    on_failure: OnFailure,
    m: Metrics,
) -> ItemResult:
    """One item's result: each suggestion's signals, status and reward under the recipe, the
    format reward, the set reward and the disagreement; every outcome counted in the metrics."""
    recipe = plan.recipe
    names = recipe.signals
    suggestions: list[SuggestionScore] = []
    rewards: list[float] = []
    rows: list[dict[str, float]] = []  # what the set expression aggregates over
    failed = 0
    zero = 0.0 if on_failure == "zero" else None
    nothing = dict.fromkeys(names, 0.0)  # a refused (or zeroed) suggestion's row
    for index, slot in enumerate(prepared.slots):
        if not slot.keys:
            reason = slot.reason or "rejected"
            suggestions.append(
                SuggestionScore(slot.text, "rejected", reward=0.0, reason=reason, signals={})
            )
            rewards.append(0.0)
            rows.append({**nothing, "reward": 0.0})
            m.suggestions.labels("rejected").inc()
            m.failures.labels(reason).inc()
            m.guard_refusals.labels(reason).inc()
            continue
        signals, cached, failure = _signals(plan, slot, outcomes, computed, index)
        if failure is not None:
            failed += 1
            suggestions.append(
                SuggestionScore(
                    slot.text, "failed", False, zero, zero, zero, zero, failure, signals
                )
            )
            if zero is not None:
                rewards.append(zero)
                rows.append({**nothing, "reward": zero})
            m.suggestions.labels("failed").inc()
            m.failures.labels(failure).inc()
            continue
        values = {name: value for name, value in signals.items() if value is not None}
        reward = recipe.suggestion_reward(values)
        # The response's dimensions: the recipe's per-dimension terms when the reward is
        # their product, else the judge's verdicts.
        dimensions = recipe.dimensions(values)
        a, f, i = (
            dimensions[d] if dimensions is not None else signals.get(f"judge.{d}")
            for d in HEAD_SIGNALS["judge"]
        )
        suggestions.append(
            SuggestionScore(slot.text, "ok", cached, a, f, i, reward, signals=signals)
        )
        rewards.append(reward)
        rows.append({**values, "reward": reward})
        m.suggestions.labels("ok").inc()
        m.reward.observe(reward)
        for name, value in values.items():
            m.head_signal.labels(name).observe(value)
            if name.startswith("judge."):
                m.dimension.labels(name[len("judge.") :]).observe(value)

    set_signals = _set_signals(plan, suggestions, computed, on_failure)
    status: ResultStatus = (
        "ok" if failed == 0 else ("failed" if failed == len(prepared.slots) else "partial")
    )
    r_f = 0.0 if prepared.problem else 1.0
    m.format_reward.observe(r_f)
    r_q: float | None = None
    u_q: float | None = None
    if not (failed and on_failure == "null"):
        known = {name: 0.0 if v is None else v for name, v in set_signals.items()}
        r_q = recipe.set_reward(r_f, rows, known)
        u_q = disagreement(rewards)
        m.set_reward.observe(r_q)
        m.disagreement.observe(u_q)
        for name, value in known.items():
            m.head_signal.labels(name).observe(value)
    return ItemResult(
        id=prepared.item.id,
        status=status,
        format_reward=r_f,
        format_problem=prepared.problem,
        reward=r_q,
        disagreement=u_q,
        suggestions=tuple(suggestions),
        set_signals=set_signals,
    )


def _signals(
    plan: Plan, slot: Slot, outcomes: Outcomes, computed: ByHead, index: int
) -> tuple[dict[str, float | None], bool, str | None]:
    """One suggestion's signals (None where its head failed), whether every LLM head's
    answer came from the cache, and the first failure."""
    signals: dict[str, float | None] = {}
    cached = bool(plan.llm_heads)
    failure: str | None = None
    for head in plan.llm_heads:
        outcome = outcomes[slot.keys[head.name]]
        names = [f"{head.name}.{n}" for n in head.signals]
        if outcome.scores is None:
            failure = failure or outcome.failure or "unknown"
            signals.update(dict.fromkeys(names, None))
        else:
            signals.update(zip(names, outcome.scores, strict=True))
            cached = cached and outcome.cached
    for computed_head in plan.computed:
        name = computed_head.name
        names = [f"{name}.{n}" for n in HEAD_SIGNALS[name]]
        result = computed.get(name, "error")
        if isinstance(result, str):
            failure = failure or result
            signals.update(dict.fromkeys(names, None))
        else:  # the head scored every slot within the per-item limit, in order
            signals.update({f"{name}.{n}": v for n, v in result[0][index].items()})
    ordered = {name: signals.get(name) for name in plan.recipe.signals}  # the recipe's order
    return ordered, cached, failure


def _set_signals(
    plan: Plan, suggestions: list[SuggestionScore], computed: ByHead, on_failure: OnFailure
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for llm in plan.llm_heads:
        if llm.any_of is not None:
            name = f"{llm.name}.{llm.any_of}"
            out[f"{llm.name}.any_{llm.any_of}"] = _any(suggestions, name, on_failure)
    for head in plan.computed:
        result = computed.get(head.name, "error")
        for name in HEAD_SET_SIGNALS[head.name]:
            out[f"{head.name}.{name}"] = None if isinstance(result, str) else result[1][name]
    return {name: out.get(name) for name in plan.recipe.set_signals}  # the recipe's order


def _any(suggestions: list[SuggestionScore], signal: str, on_failure: OnFailure) -> float | None:
    """GQR's list probability ``1 - prod(1 - p)`` of one per-suggestion probability. A refused
    suggestion is not tapped; a failed one is unknown (None), or not tapped under on_failure
    "zero"."""
    missed = 1.0
    for suggestion in suggestions:
        if suggestion.status == "rejected" or (
            suggestion.status == "failed" and on_failure == "zero"
        ):
            continue
        p = None if suggestion.status == "failed" else (suggestion.signals or {}).get(signal)
        if p is None:
            return None
        missed *= 1.0 - p
    return 1.0 - missed
