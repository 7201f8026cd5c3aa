"""LLM heads: a prompt template asking the judge for 0/1 digits under short keys."""

from __future__ import annotations

from dataclasses import dataclass

from eqs_reward.judge import JudgePrompt

__all__ = ["LLMHead"]


@dataclass(frozen=True)
class LLMHead:
    """One LLM head: its name (``judge``, ``shopper``), its prompt (whose output keys name its
    signals), and whether the judge sees the few-shot bank's examples before the case."""

    name: str
    prompt: JudgePrompt
    uses_bank: bool
    #: The signal, a probability per suggestion, whose list probability ``1 - prod(1 - p)``
    #: (GQR's) is the head's set signal ``any_<signal>`` (the shopper's ``tap``); None: no set
    #: signal.
    any_of: str | None = None

    @property
    def version(self) -> str:
        return self.prompt.version

    @property
    def signals(self) -> tuple[str, ...]:
        return self.prompt.output.names
