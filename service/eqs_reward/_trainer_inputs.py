"""Turning what RL trainers hand a reward function into contract contexts and texts: dataset
values, conversational prompts and completions, OpenRLHF's prompt + response strings. Shared by
the client adapters and the server's ``/get_reward``; standard library only."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["completion_text", "context_from", "prompt_text", "split_response"]

# Where an assistant turn starts in common chat templates: used to find the response in a decoded
# prompt + response when the prompt text does not round-trip exactly through the tokenizer.
_ASSISTANT_STARTS = (
    "<|im_start|>assistant\n",  # ChatML (Qwen, SmolLM2)
    "<|start_header_id|>assistant<|end_header_id|>\n\n",  # Llama 3
    "<start_of_turn>model\n",  # Gemma
    "[/INST]",  # Llama 2, Mistral
    "<|assistant|>\n",  # Phi-3, Zephyr
)


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or message lists in conversational mode."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(completion)


def context_from(value: Any, fallback: str = "") -> dict[str, Any]:
    """A contract context from a dataset value: a dict, a JSON object string, or a query."""
    if isinstance(value, dict) and value.get("query"):
        return dict(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("query"):
                return parsed
        return {"query": text[:1000]}
    return {"query": (fallback.strip() or "-")[-1000:]}


def prompt_text(prompt: Any) -> str:
    """The last user message of a conversational prompt, or the prompt string."""
    if isinstance(prompt, list):
        users = [
            m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"
        ]
        return str(users[-1]) if users else ""
    return str(prompt)


def split_response(query: str, prompt: str | None) -> str:
    """The response in OpenRLHF's ``prompt + response`` text: what follows the prompt, or (when
    the decoded text does not start with the prompt exactly) what follows the last assistant
    header of a known chat template, or else the whole text."""
    if prompt and query.startswith(prompt):
        return query[len(prompt) :]
    cut = max(
        ((query.rfind(marker), marker) for marker in _ASSISTANT_STARTS),
        key=lambda found: found[0],
    )
    if cut[0] >= 0:
        return query[cut[0] + len(cut[1]) :]
    return query
