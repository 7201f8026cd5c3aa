"""Text as the catalog sees it: search terms, stated budgets, and words that look like brands.

One tokenizer for indexing and for querying, whatever the backend, so SQLite FTS5 and PostgreSQL
full-text search match the same terms: NFKC, lower case, runs of letters and digits, a short
stop list (question words, the shopper's filler, budget words), and a light plural folding
("routers" -> "router", "batteries" -> "battery").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Budget", "brand_candidates", "parse_budget", "split_budget", "terms"]

_STOP = (
    "a an the and or of for to in on at by with without from into is are was be been do does "
    "did can could would should will shall may might must i me my we our you your it its this "
    "that these those there here what which who whom whose when where why how any some all each "
    "every most more less least much many few very so too than then just only also not no yes "
    "please show find get give tell want need like looking look buy buying purchase shop "
    "shopping sell selling sale have has had one ones thing things something anything kind type "
    "sort good best better great nice cheap cheaper cheapest under below over above around "
    "about approximately roughly between max maximum min minimum up within budget price priced "
    "cost costs costing dollar dollars usd eur euro euros gbp pound pounds php peso pesos inr "
    "rupee rupees jpy yen cad aud k "
)
STOPWORDS = frozenset(_STOP.split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Search terms of a text, in order, without repeats; numbers are kept (sizes, models)."""
    normalised = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    for word in _WORD.findall(normalised):
        if word in STOPWORDS:
            continue
        folded = _fold(word)
        if folded not in out:
            out.append(folded)
    return out


# -- budgets -------------------------------------------------------------------------------------
_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "₱": "PHP", "¥": "JPY", "₹": "INR"}
_CODES = {
    "usd": "USD", "dollar": "USD", "dollars": "USD", "bucks": "USD",
    "eur": "EUR", "euro": "EUR", "euros": "EUR",
    "gbp": "GBP", "pound": "GBP", "pounds": "GBP",
    "php": "PHP", "peso": "PHP", "pesos": "PHP",
    "inr": "INR", "rupee": "INR", "rupees": "INR",
    "jpy": "JPY", "yen": "JPY", "cad": "CAD", "aud": "AUD",
}  # fmt: skip
_CODE = "|".join(sorted(_CODES, key=len, reverse=True))
_SYMBOL = "|".join(re.escape(s) for s in _SYMBOLS)
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_AMOUNT = (
    rf"(?:(?P<sym>{_SYMBOL})\s?|(?P<pre>{_CODE})\s)?(?P<num>{_NUMBER})(?P<k>k\b)?"
    rf"(?:\s?(?P<post>{_CODE})\b)?"
)
_PLAIN = re.sub(r"\(\?P<\w+>", "(?:", _AMOUNT)  # the same, without named groups, to nest
_UPPER = (
    r"under|below|less than|cheaper than|no more than|not more than|up to|at most|max(?:imum)?"
    r"|within|tops"
)
_LOWER = r"over|above|more than|at least|min(?:imum)?|starting at|from"
_NEAR = r"around|about|approximately|roughly|close to|near|~"


@dataclass(frozen=True, slots=True)
class Budget:
    """A price range a suggestion states; ``currency`` None when it names none."""

    low: float | None
    high: float | None
    currency: str | None

    def admits(self, price: float) -> bool:
        return (self.low is None or price >= self.low) and (self.high is None or price <= self.high)


def _amount(match: re.Match[str]) -> tuple[float, str | None]:
    number = float(match.group("num").replace(",", ""))
    if match.group("k"):
        number *= 1000
    currency = None
    if match.group("sym"):
        currency = _SYMBOLS[match.group("sym")]
    for group in ("pre", "post"):
        if match.group(group):
            currency = _CODES[match.group(group).lower()]
    return number, currency


def parse_budget(text: str) -> Budget | None:
    """The budget a text states: "under $100", "below 2,500 PHP", "around 50 euros",
    "between $50 and $80", "$100 or less"; None when it states none (a bare number such as
    "1000 W" or "32 inch" is not a budget: it needs a currency or a budget word)."""
    return split_budget(text)[0]


def split_budget(text: str) -> tuple[Budget | None, str]:
    """The budget and the text without it (what to search for: "2,500" is not a product term)."""
    lowered = unicodedata.normalize("NFKC", text).casefold()

    def cut(span: tuple[int, int]) -> str:
        return lowered[: span[0]] + " " + lowered[span[1] :]

    between = re.search(
        rf"\b(?:between|from)\s+(?P<a>{_PLAIN})\s*(?:and|to|-)\s*(?P<b>{_PLAIN})", lowered
    )
    if between:
        first = re.match(_AMOUNT, between.group("a"))
        second = re.match(_AMOUNT, between.group("b"))
        if first and second:
            (a, ca), (b, cb) = _amount(first), _amount(second)
            return Budget(min(a, b), max(a, b), ca or cb), cut(between.span())
    for words, kind in ((_UPPER, "high"), (_LOWER, "low"), (_NEAR, "near")):
        found = re.search(rf"(?:^|\W)(?:{words})\s*(?P<amount>{_PLAIN})", lowered)
        if found:
            inner = re.match(_AMOUNT, found.group("amount"))
            assert inner is not None
            amount, currency = _amount(inner)
            if kind == "high":
                return Budget(None, amount, currency), cut(found.span())
            if kind == "low":
                return Budget(amount, None, currency), cut(found.span())
            return Budget(amount * 0.8, amount * 1.2, currency), cut(found.span())
    trailing = re.search(rf"(?P<amount>{_PLAIN})\s*(?:or less|or under|or below|max)\b", lowered)
    if trailing:
        inner = re.match(_AMOUNT, trailing.group("amount"))
        if inner:
            amount, currency = _amount(inner)
            return Budget(None, amount, currency), cut(trailing.span())
    for found in re.finditer(_AMOUNT, lowered):  # "a $100 router": around that price
        amount, currency = _amount(found)
        if currency is not None:
            return Budget(amount * 0.8, amount * 1.2, currency), cut(found.span())
    return None, lowered


# -- brands --------------------------------------------------------------------------------------
_CANDIDATE = re.compile(r"\b[A-Z][A-Za-z0-9]*(?:[-&'][A-Za-z0-9]+)*\b|\b[a-z]+[A-Z][A-Za-z0-9]*\b")


def brand_candidates(text: str) -> list[list[str]]:
    """Words that look like brand names: capitalised (not the first word of a sentence, not a
    stop word or a currency) or camel-cased ("iPhone"); each as its search terms
    ("TP-Link" -> ["tp", "link"])."""
    out: list[list[str]] = []
    for match in _CANDIDATE.finditer(text):
        word = match.group(0)
        before = text[: match.start()].rstrip()
        first = not before or before[-1] in ".?!:\"'("
        # The first word of a sentence is capitalised anyway: a candidate only when it looks
        # like a name ("TP-Link", "ASUS", "iPhone"), not a word ("Glass").
        named = any(c.isupper() for c in word[1:]) or "-" in word or word.isupper()
        if first and not named:
            continue
        folded = word.casefold()
        if len(word) < 2 or folded in STOPWORDS or folded in _CODES or word.isdigit():
            continue
        parts = terms(word)
        if parts and parts not in out:
            out.append(parts)
    return out
