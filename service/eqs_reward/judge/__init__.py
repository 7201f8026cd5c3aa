"""The judge: an OpenAI-compatible client for the LLM that grades suggestions (vLLM in practice),
its versioned prompt templates, the cases it grades and learns from, the few-shot selection, the
embedded vLLM CPU judge (``eqs_reward.judge.embedded``) and a stub for tests
(``eqs_reward.judge.stub``). Part of the ``server`` extra."""

from eqs_reward.judge._client import (
    JudgeClient,
    JudgeError,
    JudgeOutputError,
    JudgeRateLimitedError,
    JudgeRequestError,
    JudgeServerError,
    JudgeTimeoutError,
    JudgeTransportError,
    RetryPolicy,
    Scores,
    Verdict,
    grade_with_retries,
    parse_verdict,
    read_choice,
    soft_scores,
)
from eqs_reward.judge._prompt import (
    CONTROL_TOKEN,
    QUALEQS_OUTPUT,
    VERDICT_KEYS,
    VERDICT_REGEX,
    JudgePrompt,
    OutputSpec,
    PromptNotFoundError,
    escape_untrusted,
    render_context,
)
from eqs_reward.judge._selection import estimate_tokens, select_examples

__all__ = [
    "CONTROL_TOKEN",
    "QUALEQS_OUTPUT",
    "VERDICT_KEYS",
    "VERDICT_REGEX",
    "JudgeClient",
    "JudgeError",
    "JudgeOutputError",
    "JudgePrompt",
    "JudgeRateLimitedError",
    "JudgeRequestError",
    "JudgeServerError",
    "JudgeTimeoutError",
    "JudgeTransportError",
    "OutputSpec",
    "PromptNotFoundError",
    "RetryPolicy",
    "Scores",
    "Verdict",
    "escape_untrusted",
    "estimate_tokens",
    "grade_with_retries",
    "parse_verdict",
    "read_choice",
    "render_context",
    "select_examples",
    "soft_scores",
]
