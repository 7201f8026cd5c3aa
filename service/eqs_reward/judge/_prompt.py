"""Versioned judge prompt templates (``prompts/<id>.toml``) and their rendering into chat messages.

Order: system (criteria) -> few-shot examples as user/assistant turns -> the case, suggestion
last. For one (prompt version, few-shot version) everything before the case is byte-identical,
which is what vLLM's automatic prefix caching reuses across calls.

Graded text is untrusted. ``escape_untrusted`` writes it as a JSON string literal with ``<``,
``>`` and ``&`` as ``\\u`` escapes: it cannot close its ``<suggestion>`` delimiter, cannot form a
chat-template control token such as ``<|im_end|>``, and a quote inside it stays inside the string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from eqs_reward._toml import load_versioned
from eqs_reward.judge.cases import Context, Example


@dataclass(frozen=True)
class OutputSpec:
    """The answer a prompt asks for: a compact, whitespace-free JSON object of 0/1 digits under
    short keys, each naming a signal (``{"a":1,"f":0,"i":1}``). A json_schema response_format
    leaves whitespace free and small models were measured looping on spaces until max_tokens;
    the regex grammar answers in a handful of tokens, and soft scores read each digit's
    logprobs."""

    keys: tuple[tuple[str, str], ...]  # (short key, signal name), in answer order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.keys)

    @property
    def regex(self) -> str:
        """The grammar for vLLM's structured_outputs."""
        return r"\{" + ",".join(f'"{key}":[01]' for key, _ in self.keys) + r"\}"

    @property
    def pattern(self) -> re.Pattern[str]:
        """The answer with one group per digit."""
        return re.compile(r"\{" + ",".join(f'"{key}":([01])' for key, _ in self.keys) + r"\}")

    def render(self, values: Sequence[int]) -> str:
        """An answer, as a few-shot example's assistant turn shows it."""
        digits = ",".join(f'"{key}":{v}' for (key, _), v in zip(self.keys, values, strict=True))
        return "{" + digits + "}"


#: The QualEQS judge's answer: answerability, factuality, information gain.
QUALEQS_OUTPUT = OutputSpec(
    (("a", "answerability"), ("f", "factuality"), ("i", "information_gain"))
)
VERDICT_KEYS: dict[str, str] = dict(QUALEQS_OUTPUT.keys)
VERDICT_REGEX = QUALEQS_OUTPUT.regex

# Chat-template control tokens of common model families, refused in suggestions before the judge.
CONTROL_TOKEN = re.compile(
    r"<\|[A-Za-z0-9_ .:-]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<\|?(?:begin|end)_of_text\|?>",
)


def escape_untrusted(text: str) -> str:
    """JSON string literal of ``text`` that cannot break out of its delimiters."""
    literal = json.dumps(text, ensure_ascii=False)
    return literal.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_context(context: Context) -> str:
    lines = [f"query: {escape_untrusted(context.query)}"]
    for turn in context.history:
        lines.append(f"{turn.role}: {escape_untrusted(turn.content)}")
    if context.profile:
        lines.append(f"profile: {escape_untrusted(context.profile)}")
    if context.intent:
        lines.append(f"intent: {context.intent}")
    return "\n".join(lines)


class PromptNotFoundError(LookupError):
    """No template with that id in the prompts folder."""


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    """One versioned judge prompt."""

    version: str
    system: str
    user: Template
    output: OutputSpec = QUALEQS_OUTPUT

    @classmethod
    def load(cls, folder: Path, version: str) -> JudgePrompt:
        data = load_versioned(folder, version, PromptNotFoundError, "prompt template")
        keys = data.get("output", {}).get("keys")
        output = OutputSpec(tuple(keys.items())) if keys else QUALEQS_OUTPUT
        return cls(
            version=version, system=data["system"], user=Template(data["user"]), output=output
        )

    def case_message(self, context: Context, suggestion: str) -> str:
        return self.user.substitute(
            context=render_context(context), suggestion=escape_untrusted(suggestion)
        )

    def messages(
        self, examples: Sequence[Example], context: Context, suggestion: str
    ) -> list[dict[str, str]]:
        """The chat messages of one judge call: identical prefix first, the suggestion last."""
        out = [{"role": "system", "content": self.system}]
        for example in examples:
            out.append(
                {"role": "user", "content": self.case_message(example.context, example.suggestion)}
            )
            labels = example.labels.model_dump()
            values = [labels[name] for name in self.output.names]
            out.append({"role": "assistant", "content": self.output.render(values)})
        out.append({"role": "user", "content": self.case_message(context, suggestion)})
        return out
