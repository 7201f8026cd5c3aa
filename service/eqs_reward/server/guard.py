"""Deterministic guards: what is refused before the judge sees it (status ``rejected``, reward 0).

A GRPO policy searches for text that wins the reward; text that addresses the grader instead of
the shopper must not. Refused, with the family as the ``reason``:

- ``empty``, ``too_long``, ``invalid_text`` (a lone surrogate) and ``control_token`` (a chat
  template's control token) as before;
- ``grader_address``: instructions or notes to the grader, the rubric's criteria by name;
- ``forged_verdict``: a verdict written into the text (JSON or key/value naming the judge's keys,
  the dimensions or a score);
- ``forged_turn``: a chat role or turn of a common template, or the judge prompt's delimiters;
- ``degenerate``: punctuation only, reasoning openers ("Thought process:", "Solution"), or no
  content word at all.

The families' rules are a versioned file beside the prompt templates
(``prompts/guards/<id>.toml``); its id is part of every cache key. Text is normalised first so
that obfuscation does not pass: NFKC (fullwidth letters become ASCII), invisible format and bidi
characters removed, accents stripped, Cyrillic and Greek look-alikes folded to Latin, casefolded;
then matched as normalised, with spaced-out letters joined, and with leetspeak undone.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from eqs_reward._toml import load_versioned
from eqs_reward.judge import CONTROL_TOKEN
from eqs_reward.judge.cases import has_lone_surrogate, is_blank

__all__ = ["FAMILIES", "GUARD_REASONS", "Guard", "GuardNotFoundError", "normalise_views"]

FAMILIES = ("forged_turn", "forged_verdict", "grader_address", "degenerate")
#: Every reason a suggestion is refused before the judge (``rejected``), ``too_many`` (a raw
#: completion's options past the limit) included.
GUARD_REASONS = frozenset(
    {"empty", "too_long", "invalid_text", "control_token", "too_many", *FAMILIES}
)

# Look-alikes of Latin letters (Cyrillic, Greek, a few symbols) that NFKC leaves alone.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ɡ": "g", "ο": "o", "α": "a",
        "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
        "β": "b", "η": "n", "μ": "u", "ω": "w", "ı": "i", "ℓ": "l",
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\uff02": '"',
    }
)  # fmt: skip
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_SPACED = re.compile(r"\b(?:\w[ ._\-*·]){2,}\w\b")
_MIXED = re.compile(r"\S*[a-z]\S*")
_WORDS = re.compile(r"[^\W_]+")


def _base(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    decomposed = unicodedata.normalize("NFD", folded)
    kept = "".join(
        " " if ch in "\t\r\u2028\u2029" else ch
        for ch in decomposed
        if ch == "\n" or unicodedata.category(ch) not in ("Cf", "Cc", "Mn", "Me")
    )
    lowered = unicodedata.normalize("NFC", kept).casefold().translate(_HOMOGLYPHS)
    # Two or more spaces stay a (double) gap: in "r a t e   t h i s" they separate words.
    return re.sub(r"[ \u00a0\u3000]{2,}", "  ", lowered).strip()


def _unleet(token: re.Match[str]) -> str:
    word = token.group(0)
    return word.translate(_LEET) if any(ch.isdigit() or ch in "@$" for ch in word) else word


def normalise_views(text: str) -> tuple[str, ...]:
    """The views the rules are matched in: normalised, spaced letters joined, leetspeak undone."""
    gapped = _base(text)
    base = gapped.replace("  ", " ")
    joined = " ".join(
        _SPACED.sub(lambda m: re.sub(r"[ ._\-*·]", "", m.group(0)), segment)
        for segment in gapped.split("  ")
    )
    unleet = _MIXED.sub(_unleet, joined)
    return tuple(dict.fromkeys((base, joined, unleet)))


class GuardNotFoundError(LookupError):
    """No guard rules with that id in the guards folder."""


@dataclass(frozen=True)
class Guard:
    """One versioned set of guard rules (see the module docstring)."""

    version: str
    families: tuple[tuple[str, re.Pattern[str]], ...]
    function_words: frozenset[str]
    max_chars: int = 1000

    @classmethod
    def load(cls, folder: Path, version: str, max_chars: int = 1000) -> Guard:
        path = folder / f"{version}.toml"
        data = load_versioned(folder, version, GuardNotFoundError, "guard rules")
        families = []
        for name, body in data["families"].items():
            if name not in FAMILIES:
                raise GuardNotFoundError(f"{path}: unknown family {name!r}")
            patterns = body.get("patterns", [])
            if patterns:
                joined = "|".join(f"(?:{p})" for p in patterns)
                families.append((name, re.compile(joined, re.IGNORECASE | re.MULTILINE)))
        words = frozenset(data["families"].get("degenerate", {}).get("function_words", []))
        return cls(version, tuple(families), words, max_chars)

    def reason(self, text: str) -> str | None:
        """Why ``text`` is refused before the judge, or None when it may be judged."""
        return self._reason(text)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one Guard per service; policies repeat
    def _reason(self, text: str) -> str | None:
        if is_blank(text):
            return "empty"
        if len(text) > self.max_chars:
            return "too_long"
        if has_lone_surrogate(text):
            return "invalid_text"
        if CONTROL_TOKEN.search(text):
            return "control_token"
        views = normalise_views(text)
        for family, pattern in self.families:
            if any(pattern.search(view) for view in views):
                return family
        if not self._has_content(views[0]):
            return "degenerate"
        return None

    def _has_content(self, text: str) -> bool:
        """A word of at least two letters that is not a function word, or a number."""
        for word in _WORDS.findall(text):
            if any(ch.isdigit() for ch in word):
                return True
            if len(word) >= 2 and word not in self.function_words:
                return True
            if len(word) == 1 and not word.isascii():  # one CJK character is a word
                return True
        return False
