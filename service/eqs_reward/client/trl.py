"""TRL: an async reward function for ``GRPOTrainer`` and ``AsyncGRPOTrainer`` (tested against
TRL 1.16's own code).

    from eqs_reward.client.trl import eqs_reward_func
    reward = eqs_reward_func("http://reward:8000", fewshot_version=3)
    trainer = GRPOTrainer(..., reward_funcs=[reward])

``AsyncGRPOTrainer`` (``trl.experimental.async_grpo`` in 1.16) pickles its reward functions into
a spawned, CUDA-free child that scores each rollout group off the training loop: the object this
builds pickles (its settings; its HTTP clients are made in the process that calls it), and TRL's
child awaits it per group, turning a ``None`` into advantage 0.

TRL 1.16 (``GRPOTrainer._calculate_rewards``) awaits it on the trainer's event loop, once per
batch, as ``f(prompts=..., completions=..., completion_ids=..., **dataset_columns,
trainer_state=..., log_extra=..., log_metric=...)``, with each prompt repeated
``num_generations`` times in consecutive rows; the batch goes to the service as one request.

A failed sample (the judge could not grade it) must be neutral. What is neutral depends on the
other reward functions, which the trainer passed to us through ``log_metric`` (a bound method of
the trainer), so ``policy="auto"`` (the default) picks:

- this is the only reward function: ``None``. TRL then leaves the sample out of its group's mean
  and std and gives it advantage 0; the other samples are untouched.
- other reward functions score it too: the mean reward of the judged samples of its group (TRL's
  group: consecutive blocks of ``num_generations``). The judge's term is then neutral in the sum
  (the sample's advantage comes from the other functions only); TRL cannot leave it out of the
  group's std, which shrinks a little (measured in docs/trainers.md).

While the service is unreachable the client waits (``wait_for_service_s``, 10 minutes by default),
logging each wait, so a restart of the service does not end the training run. The shopper's
context comes from the dataset column ``query_column`` (a query string or a context dict or JSON)
or else the prompt's last user message. Every dimension, every signal of the recipe's heads
(``recipe=`` or ``EQS_REWARD_RECIPE``: pin it for a run), the format reward and the failed flag
go to TRL's completions table (``log_extra``), their means to its metrics (``log_metric``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from eqs_reward._trainer_inputs import completion_text, context_from, prompt_text
from eqs_reward.client._adapters import (
    deadline_from_env,
    pinned_recipe,
    pinned_version,
    service_url,
)
from eqs_reward.client._client import AsyncRewardClient
from eqs_reward.rewards import apply_policy, consecutive_groups
from eqs_reward.types import DIMENSIONS, FailurePolicy, ScoreMode, ScoreResponse

__all__ = ["EqsRewardFunc", "eqs_reward_func"]

log = logging.getLogger("eqs_reward.client.trl")


def _trainer(log_metric: Any) -> Any:
    """The GRPOTrainer behind TRL's ``log_metric`` (a bound method), if it is one."""
    trainer = getattr(log_metric, "__self__", None)
    return trainer if hasattr(trainer, "reward_funcs") else None


def _group_size(trainer: Any, explicit: int | None) -> int | None:
    if explicit is not None:
        return explicit
    if trainer is None:
        return None
    training = getattr(getattr(trainer, "model", None), "training", True)
    size = trainer.num_generations if training else trainer.num_generations_eval
    return int(size) if size else None


def _log(response: ScoreResponse, kwargs: dict[str, Any]) -> None:
    log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
    results = response.results
    n = len(results) or 1
    columns: dict[str, list[float]] = {}  # the same columns for every sample
    for dimension in DIMENSIONS:
        means = [r.dimension_mean(dimension) for r in results]
        columns[dimension] = [math.nan if v is None else v for v in means]
    for name, column in response.signal_logs().items():
        columns[name] = [math.nan if v is None else v for v in column]
    columns["format_reward"] = [r.format_reward for r in results]
    columns["failed"] = [0.0 if r.status == "ok" else 1.0 for r in results]
    if log_extra is not None:
        for name, values in columns.items():
            log_extra(name, values)
    if log_metric is not None:
        for name, values in columns.items():
            finite = [v for v in values if not math.isnan(v)]
            if finite:
                log_metric(f"eqs/{name}", sum(finite) / len(finite))
        log_metric("eqs/failed_share", sum(columns["failed"]) / n)
        log_metric("eqs/fewshot_version", float(response.meta.fewshot_version))
        if response.meta.recipe:
            log_metric("eqs/recipe_version", float(response.meta.recipe["version"]))


@dataclass(eq=False, repr=False)
class EqsRewardFunc:
    """The reward function ``eqs_reward_func`` builds: an async callable object.

    It pickles (TRL's ``AsyncGRPOTrainer`` spawns a CUDA-free child process and pickles its
    reward functions into it): what it pickles is its settings, the fields below; its HTTP
    clients are made lazily, one per event loop, in the process that calls it, and never
    pickled. TRL names it by ``__name__`` and awaits it because its ``__call__`` is a coroutine
    function.
    """

    __name__: ClassVar[str] = "eqs_reward"

    base_url: str
    policy: FailurePolicy | Literal["auto"]
    score_mode: ScoreMode
    fewshot_version: int | None
    recipe: str | None
    k: int | None
    query_column: str
    group_size: int | None
    end_tokens: Sequence[str]
    client_options: dict[str, Any]
    _clients: dict[asyncio.AbstractEventLoop, AsyncRewardClient] = field(
        default_factory=dict, init=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_clients"] = {}  # made again where it is called
        return state

    def __repr__(self) -> str:
        return f"EqsRewardFunc({self.base_url!r}, recipe={self.recipe!r})"

    def _client(self) -> AsyncRewardClient:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            self._clients[loop] = AsyncRewardClient(
                self.base_url,
                k=self.k,
                score_mode=self.score_mode,
                fewshot_version=self.fewshot_version,
                recipe=self.recipe,
                **self.client_options,
            )
        return self._clients[loop]

    async def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        columns = kwargs.get(self.query_column)
        contexts = [
            context_from(columns[i] if columns else None, prompt_text(prompt))
            for i, prompt in enumerate(prompts)
        ]
        texts = [completion_text(c) for c in completions]
        response = await self._client().score_completions(
            contexts, texts, end_tokens=self.end_tokens
        )
        trainer = _trainer(kwargs.get("log_metric"))
        size = _group_size(trainer, self.group_size)
        groups: Sequence[Any] = (
            consecutive_groups(len(texts), size) if size else [prompt_text(p) for p in prompts]
        )
        chosen: FailurePolicy
        if self.policy == "auto":
            alone = trainer is not None and len(trainer.reward_funcs) == 1
            chosen = "skip" if alone else "group_mean"
        else:
            chosen = self.policy
        rewards = apply_policy([r.reward for r in response.results], groups, chosen)
        _log(response, kwargs)
        failed = sum(1 for r in response.results if r.reward is None)
        if failed:
            log.info("%d of %d samples not judged: policy %s", failed, len(texts), chosen)
        return rewards

    async def aclose(self) -> None:
        """Close this loop's client (TRL never does: the process exit does)."""
        loop = asyncio.get_running_loop()
        if loop in self._clients:
            await self._clients.pop(loop).aclose()


def eqs_reward_func(
    url: str | None = None,
    *,
    policy: FailurePolicy | Literal["auto"] = "auto",
    score_mode: ScoreMode = "soft",
    fewshot_version: int | None = None,
    recipe: str | None = None,
    k: int | None = 3,
    query_column: str = "query",
    group_size: int | None = None,
    end_tokens: Sequence[str] = (),
    **client_options: Any,
) -> EqsRewardFunc:
    """Build the reward function. ``url`` defaults to ``EQS_REWARD_URL`` (one is required);
    ``fewshot_version`` to ``EQS_REWARD_FEWSHOT_VERSION`` and ``recipe`` to ``EQS_REWARD_RECIPE``:
    pin both for a training run (they are read here, in the process that builds it, and travel
    with it when it is pickled). ``group_size`` overrides TRL's ``num_generations``;
    ``client_options`` go to the client (``wait_for_service_s``, ``timeout_s``, ``deadline_s``
    (default ``EQS_REWARD_DEADLINE_S``), ...)."""
    deadline = deadline_from_env()
    if deadline is not None:
        client_options.setdefault("deadline_s", deadline)
    return EqsRewardFunc(
        service_url(url),
        policy=policy,
        score_mode=score_mode,
        fewshot_version=pinned_version(fewshot_version),
        recipe=pinned_recipe(recipe),
        k=k,
        query_column=query_column,
        group_size=group_size,
        end_tokens=list(end_tokens),
        client_options=dict(client_options),
    )
