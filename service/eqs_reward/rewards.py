"""The QualEQS reward math, as pure functions.

Kept free of I/O and of the web layer so the numbers a trainer sees can be property-tested
directly (tests/test_rewards.py) and reused by the server, the evaluator and the miner. Only the
standard library: every audience of the package can import it.

- suggestion reward ``r(s) = answerability * factuality * information_gain``
- format reward ``r_f`` in {0, 1}
- set reward ``r_q = r_f * mean_i r(s_i)``
- disagreement ``u_q`` = population variance of the ``r(s_i)``
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from eqs_reward.types import FailurePolicy

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)
_SPACES = re.compile(r"\s+")


def suggestion_reward(answerability: float, factuality: float, information_gain: float) -> float:
    """The product of the three dimension scores: one failed criterion zeroes the suggestion."""
    return answerability * factuality * information_gain


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for an empty sequence (a set with nothing in it earns nothing)."""
    if not values:
        return 0.0
    return sum(values) / len(values)


def set_reward(format_reward: float, rewards: Sequence[float]) -> float:
    """``r_q = r_f * mean(r(s_i))``."""
    return format_reward * mean(rewards)


def disagreement(rewards: Sequence[float]) -> float:
    """Population variance ``(1/k) * sum (r_i - mean)^2``, the hard-query mining signal.

    Computed in two passes (mean first) so it never goes negative through cancellation.
    """
    if not rewards:
        return 0.0
    mu = mean(rewards)
    return sum((r - mu) ** 2 for r in rewards) / len(rewards)


def fold(text: str) -> str:
    """Case, space and punctuation folding used to detect duplicate suggestions."""
    normalised = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(
        ch if not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in normalised
    )
    return _SPACES.sub(" ", kept).strip()


def normalise_text(text: str) -> str:
    """Whitespace normalisation applied before judging and cache keying."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def whitespace_tokens(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True, slots=True)
class ParsedCompletion:
    """What a raw policy completion held.

    ``suggestions`` are the string options found (possibly recovered from a sloppy completion so
    they can still be judged and logged); ``well_formed`` says whether the completion itself met
    the format (nothing but a ``{"options": [...]}`` object of strings, optionally fenced).
    """

    suggestions: list[str]
    well_formed: bool
    problem: str | None = None


# End-of-turn and end-of-text tokens of common chat templates. A trainer that decodes with special
# tokens kept (OpenRLHF does) hands us the response with one of these at the end; it is the
# template's, not the policy's, and must not cost the format reward.
END_TOKENS: tuple[str, ...] = (
    "<|im_end|>",  # ChatML: Qwen, SmolLM2, many others
    "<|endoftext|>",  # Qwen, GPT-2 family, Phi
    "<|eot_id|>",  # Llama 3
    "<|eom_id|>",  # Llama 3 tool turns
    "<|end_of_text|>",  # Llama 3
    "</s>",  # Llama 2, Mistral
    "<end_of_turn>",  # Gemma
    "<eos>",  # Gemma
    "<|end|>",  # Phi-3, harmony
    "<|return|>",  # harmony (gpt-oss)
    "<\uff5cend\u2581of\u2581sentence\uff5c>",  # DeepSeek
)


def strip_end_tokens(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without the end tokens (and whitespace) that trail it, repeatedly: the known
    families' and the caller's own ``extra`` ones. Tokens inside the text are left alone (the
    guards refuse those)."""
    tokens = tuple(t for t in (*END_TOKENS, *extra) if t)
    stripped = text.rstrip()
    changed = True
    while changed and stripped:
        changed = False
        for token in tokens:
            if stripped.endswith(token):
                stripped = stripped[: -len(token)].rstrip()
                changed = True
    return stripped


def parse_completion(text: str, end_tokens: Iterable[str] = ()) -> ParsedCompletion:
    """Parse a policy's raw text into its options.

    Accepts ``{"options": [...]}``, optionally inside a Markdown code fence and followed by a
    chat template's end tokens (``strip_end_tokens``). Anything else around the object (prose, a
    second object) makes it not well formed, but the first options object found is still
    returned so its suggestions can be judged.
    """
    stripped = strip_end_tokens(text, end_tokens).strip()
    fenced = _FENCE.match(stripped)
    body = fenced.group(1).strip() if fenced else stripped
    try:
        value = json.loads(body)
        exact = True
    except json.JSONDecodeError:
        value, exact = _first_json_object(body), False
    if not isinstance(value, dict):
        partial = _truncated_options(body)
        if partial:
            return ParsedCompletion(partial, False, "options object is incomplete (truncated?)")
        return ParsedCompletion([], False, "completion is not a JSON object with 'options'")
    options = value.get("options")
    if not isinstance(options, list):
        return ParsedCompletion([], False, "'options' is missing or not a list")
    strings = [o for o in options if isinstance(o, str)]
    if len(strings) != len(options):
        return ParsedCompletion(strings, False, "every option must be a string")
    if not exact:
        return ParsedCompletion(strings, False, "text around the options object")
    return ParsedCompletion(strings, True)


_OPTIONS_START = re.compile(r'"options"\s*:\s*\[')
_STRING_ITEM = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*(,|\])')


def _truncated_options(text: str) -> list[str]:
    """The complete string items of an options list cut off mid-way (``max_tokens`` hit)."""
    start = _OPTIONS_START.search(text)
    if start is None:
        return []
    items: list[str] = []
    position = start.end()
    while True:
        match = _STRING_ITEM.match(text, position)
        if match is None:
            return items
        try:
            items.append(json.loads(f'"{match.group(1)}"'))
        except json.JSONDecodeError:
            return items
        if match.group(2) == "]":
            return items
        position = match.end()


def _first_json_object(text: str) -> object:
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "options" in value:
            return value
    return None


def format_problem(
    suggestions: Sequence[str], k: int | None, max_tokens: int, well_formed: bool = True
) -> str | None:
    """Why a suggestion set breaks the format rules, or None when it is well formed."""
    if not well_formed:
        return "completion is not a well-formed options object"
    if k is not None and len(suggestions) != k:
        return f"expected exactly {k} suggestions, got {len(suggestions)}"
    if not suggestions:
        return "no suggestions"
    seen: set[str] = set()
    for index, text in enumerate(suggestions):
        if not text.strip():
            return f"suggestion {index} is empty"
        if whitespace_tokens(text) > max_tokens:
            return f"suggestion {index} has more than {max_tokens} tokens"
        key = fold(text)
        if key in seen:
            return f"suggestion {index} repeats an earlier one"
        seen.add(key)
    return None


def format_reward(
    suggestions: Sequence[str], k: int | None, max_tokens: int, well_formed: bool = True
) -> float:
    """1.0 when the set is well formed (see ``format_problem``), else 0.0."""
    return 0.0 if format_problem(suggestions, k, max_tokens, well_formed) else 1.0


# -- failure policies ---------------------------------------------------------------------------
# Failure policies: what a sample the service could not judge is worth to a trainer.
#
# A judge failure must not move the policy. Under group-normalised advantages (GRPO, RLOO, the
# baselines of veRL and OpenRLHF) a sample's advantage is zero exactly when its reward equals the
# mean of its group, so:
#
# - ``group_mean``: the mean reward of the *other* samples of its group that were judged. Adding
#   a value equal to the group's mean leaves the mean unchanged, so the failed sample's advantage
#   is 0 and the others' centring is untouched (their spread shrinks a little: see
#   docs/trainers.md).
#   A group where everything failed gets 0.0 for all, which is again advantage 0.
# - ``zero``: 0.0, the paper's "neutral" value. Under group normalisation it is a penalty whenever
#   the others scored above 0; only for trainers that do not normalise per group.
# - ``skip``: ``None``. TRL leaves a sample for which every reward function returned None out of
#   its group statistics and gives it advantage 0 (the exact neutral), but only when no other
#   reward function scored it.


def consecutive_groups(n: int, group_size: int | None) -> list[int]:
    """Group ids for ``n`` samples in consecutive blocks of ``group_size`` (how GRPO trainers lay
    a batch out); one group for everything when no size is known."""
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    return [i // group_size for i in range(n)] if group_size else [0] * n


def apply_policy(
    rewards: Sequence[float | None], groups: Sequence[Hashable], policy: FailurePolicy
) -> list[float | None]:
    """Replace failed (None) rewards according to ``policy``; judged rewards pass unchanged."""
    if len(groups) != len(rewards):
        raise ValueError(f"{len(groups)} group ids for {len(rewards)} rewards")
    if policy == "skip":
        return list(rewards)
    if policy == "zero":
        return [0.0 if r is None else r for r in rewards]
    judged: dict[Hashable, list[float]] = {}
    for reward, group in zip(rewards, groups, strict=True):
        if reward is not None:
            judged.setdefault(group, []).append(reward)
    out: list[float | None] = []
    for reward, group in zip(rewards, groups, strict=True):
        if reward is not None:
            out.append(reward)
        else:
            peers = judged.get(group, [])
            out.append(sum(peers) / len(peers) if peers else 0.0)
    return out
