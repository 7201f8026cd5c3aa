"""The taught head: the three QualEQS dimensions predicted from labeled examples, no judge call.

The embedded 135M judge cannot rank suggestions by quality (its product ROC AUC on labeled cases
from other queries was 0.40), but the product holds labels: every bank example carries three, and
the package ships labeled cases. This head learns from them.

Per dimension, a logistic regression (L2, ``C`` below) over text features of (query, suggestion),
the feature set and ``C`` chosen by query-grouped cross-validation on the training cases, never on
the validation split:

- the suggestion's sentence embedding and its cosine similarity with the query's (the relation
  between the two; adding the query's embedding, or its element-wise product and difference with
  the suggestion's, measured no better);
- cheap lexical features: length, a question mark, digits, a price, the share of the
  suggestion's words already in the query and of the query's words it keeps, second-person
  words (the assistant's voice), new words.

Text is read in lower case: shouting, or a brand's capital, must not move a score (a capital
letter feature and case-sensitive embeddings measured worse out of fold: product ROC AUC 0.913
against 0.920 in lower case, factuality 0.905 against 0.918, on 5 query-grouped folds of the
fitting cases).

Its probabilities are calibrated by construction (the logistic loss). It is fit on the bank's
examples at a version plus the packaged training cases (minus the held-out queries of the
validation split), deterministically (lbfgs, fixed order), and stored with that version as JSON
(never pickle). A bank example whose suggestion is a near paraphrase of the scored one, under a
near-identical query, carries its labels over at once (``NEIGHBOUR_SIMILARITY``): teaching by a
new bad case is immediate, without waiting for the regression to move.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eqs_reward._jsonl import read_jsonl
from eqs_reward._resources import judge_cases_dir
from eqs_reward.judge.cases import Context, Example, LabeledCase
from eqs_reward.server.heads._base import HeadScores, HeadUnavailableError
from eqs_reward.server.heads.exclusivity import Embedder
from eqs_reward.types import DIMENSIONS

__all__ = [
    "FEATURES",
    "NEIGHBOUR_SIMILARITY",
    "TRAINING_FILES",
    "TaughtHead",
    "TaughtModel",
    "canonical",
    "features",
    "fit_model",
    "held_out",
    "training_cases",
    "views",
]

#: The feature set's name: part of the head's version and of every stored model.
FEATURES = "taught-3"
#: Inverse L2 strength, chosen by 5-fold query-grouped cross-validation on the fitting cases and
#: the seed bank (out-of-fold product ROC AUC 0.862 at 1, 0.880 at 3, 0.891 at 10; with the
#: query's embedding and the interaction features as well: 0.855, 0.867, 0.872).
C = 10.0
#: Cosine similarity of the suggestions (and, separately, of the queries) at or above which a
#: bank example's labels carry over to the scored suggestion: a paraphrase, not a neighbour
#: topic (two different questions about one product measure about 0.8 with wordllama).
NEIGHBOUR_SIMILARITY = 0.92
#: What a carried-over label becomes: near certain, not certain (a paraphrase may differ).
NEIGHBOUR_PROBABILITY = {0: 0.05, 1: 0.95}
#: Rows (one suggestion under one query and bank version) kept once computed.
ROWS_CACHED = 100_000
#: The packaged labeled files the head fits on (``judge_cases/SOURCES.md``); ``dev.jsonl`` is
#: never among them.
TRAINING_FILES = ("train.jsonl", "train_extra.jsonl")
#: The share of training queries held out for validation (with ``dev.jsonl``), by query hash.
HELD_OUT_SHARE = 0.25

_WORDS = re.compile(r"[a-z0-9$]+")
_SECOND_PERSON = re.compile(r"\b(you|your|yours)\b")


_FIRST_SENTENCE = re.compile(r"^(.+?[?!.])(\s|$)", re.S)
_REPEATED_RUN = re.compile(r"\b((?:\S+\s+){0,5}?\S+)(?:\s+\1\b)+", re.I)


def canonical(text: str) -> str:
    """The text a policy cannot inflate by repeating itself: runs of a repeated word or phrase
    (up to six words) collapsed to one, and shouting (mostly capitals) in sentence case."""
    text = " ".join(text.split())
    previous = None
    while previous != text:
        previous, text = text, _REPEATED_RUN.sub(r"\1", text)
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(ch.isupper() for ch in letters) > 0.6 * len(letters):
        text = text[:1].upper() + text[1:].lower()
    return text


def views(text: str) -> list[str]:
    """What the head scores of a suggestion, taking the lowest score of each dimension: the
    whole text and its first sentence, both canonical, and the whole in sentence case (what
    shouting becomes). Padding after the question (filler, repetition, a second sentence) or
    shouting can then lower a score, never raise it."""
    whole = canonical(text)
    match = _FIRST_SENTENCE.match(whole)
    first = match.group(1) if match else whole
    return [whole] if first == whole else [whole, first]


def held_out(query: str) -> bool:
    """Whether a training case's query belongs to the validation split (never fit on)."""
    digest = hashlib.sha256(query.strip().lower().encode()).digest()
    return digest[0] < 256 * HELD_OUT_SHARE


def _lexical(query: str, suggestion: str) -> list[float]:
    q_words, s_words = set(_WORDS.findall(query.lower())), _WORDS.findall(suggestion.lower())
    s_set = set(s_words)
    shared = len(q_words & s_set)
    return [
        len(s_words) / 10,
        float(suggestion.strip().endswith("?")),
        float(any(ch.isdigit() for ch in suggestion)),
        float("$" in suggestion),
        shared / max(1, len(s_set)),
        shared / max(1, len(q_words)),
        float(bool(_SECOND_PERSON.search(suggestion.lower()))),
        len(s_set - q_words) / 10,
    ]


def features(query_vectors: Any, suggestion_vectors: Any, pairs: Sequence[tuple[str, str]]) -> Any:
    """The feature matrix of (query, suggestion) pairs from their unit embeddings."""
    q = np.asarray(query_vectors, dtype=np.float64)
    s = np.asarray(suggestion_vectors, dtype=np.float64)
    cosine = (q * s).sum(axis=1, keepdims=True)
    lexical = np.asarray([_lexical(query, text) for query, text in pairs], dtype=np.float64)
    matrix = np.hstack([s, cosine, lexical.reshape(len(pairs), -1)])
    # An embedder answering a non-finite number must not become a NaN reward.
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True, slots=True)
class TaughtModel:
    """One fitted model: per dimension, weights and intercept over ``FEATURES``."""

    embedder: str
    labels_digest: str
    examples: int
    coef: dict[str, tuple[float, ...]]
    intercept: dict[str, float]

    @property
    def version(self) -> str:
        return f"{FEATURES}/{self.embedder}/{self.labels_digest[:12]}"

    def predict(self, matrix: Any) -> dict[str, Any]:
        """Per dimension, P(label = 1) for each row of a feature matrix."""
        out = {}
        for dimension in DIMENSIONS:
            logits = matrix @ np.asarray(self.coef[dimension]) + self.intercept[dimension]
            out[dimension] = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FEATURES,
                "embedder": self.embedder,
                "labels_digest": self.labels_digest,
                "examples": self.examples,
                "coef": {d: list(v) for d, v in self.coef.items()},
                "intercept": self.intercept,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TaughtModel:
        body = json.loads(text)
        if body.get("format") != FEATURES:
            raise ValueError(f"a taught model of format {body.get('format')!r}, not {FEATURES}")
        return cls(
            embedder=str(body["embedder"]),
            labels_digest=str(body["labels_digest"]),
            examples=int(body["examples"]),
            coef={d: tuple(float(x) for x in body["coef"][d]) for d in DIMENSIONS},
            intercept={d: float(body["intercept"][d]) for d in DIMENSIONS},
        )


def training_cases(extra: Sequence[Path] = ()) -> list[LabeledCase]:
    """The packaged training cases (``TRAINING_FILES``), then each registered file's
    (``EQS_REWARD_TAUGHT_CASES``; the ``judge_cases`` format). The held-out queries of the
    validation split are dropped by the head, whichever file they come from."""
    paths = [*(judge_cases_dir() / name for name in TRAINING_FILES), *extra]
    return [LabeledCase.model_validate(row) for path in paths for row in read_jsonl(path)]


def _digest(cases: Sequence[LabeledCase]) -> str:
    rows = sorted(
        json.dumps([c.context.query, c.suggestion, c.labels.model_dump()], sort_keys=True)
        for c in cases
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def fit_model(embedder: str, matrix: Any, cases: Sequence[LabeledCase]) -> TaughtModel:
    """Fit the three regressions (deterministic for the same rows in the same order). A
    dimension whose labels are all one value gets that value's log-odds and no weights."""
    from sklearn.linear_model import LogisticRegression

    coef: dict[str, tuple[float, ...]] = {}
    intercept: dict[str, float] = {}
    for dimension in DIMENSIONS:
        labels = np.asarray([getattr(c.labels, dimension) for c in cases])
        if labels.min() == labels.max():
            share = float(np.clip(labels.mean(), 0.02, 0.98))
            coef[dimension] = (0.0,) * matrix.shape[1]
            intercept[dimension] = float(np.log(share / (1 - share)))
            continue
        model = LogisticRegression(C=C, max_iter=5000).fit(matrix, labels)
        coef[dimension] = tuple(float(x) for x in model.coef_[0])
        intercept[dimension] = float(model.intercept_[0])
    return TaughtModel(embedder, _digest(cases), len(cases), coef, intercept)


def as_case(example: Example) -> LabeledCase:
    return LabeledCase(
        id=example.id, context=example.context, suggestion=example.suggestion,
        labels=example.labels,
    )  # fmt: skip


@dataclass(slots=True)
class _Loaded:
    """A version's model, and its examples' embeddings and labels for the carry-over rule."""

    model: TaughtModel
    queries: Any
    suggestions: Any
    labels: list[dict[str, int]]


#: Reads and writes a version's stored model (the bank store's ``get_taught``/``set_taught``).
ModelStore = tuple[
    Callable[[int, str], Awaitable[str | None]], Callable[[int, str, str], Awaitable[None]]
]


class TaughtHead:
    """The ``taught`` head: signals ``answerability``, ``factuality``, ``information_gain``.

    Its model depends on the bank version, so unlike the other computed heads it is given the
    version a request uses. A version's model is read from the store, or fitted (about a second)
    and stored when it has none: the bank service fits one as soon as it creates a version, so
    that happens only for versions written around the service (``eqs-reward bank import``).
    """

    name = "taught"
    uses_bank = True

    def __init__(
        self,
        embedder: Embedder,
        training: Sequence[LabeledCase],
        store: ModelStore | None = None,
        loaded_versions: int = 8,
    ) -> None:
        self.embedder = embedder
        self.training = [c for c in training if not held_out(c.context.query)]
        self._store = store
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._size = loaded_versions
        self._locks: dict[str, asyncio.Lock] = {}
        # A policy repeats itself: rows already computed under a version are served again
        # (keyed by the version's cache id, so a new version never meets them).
        self._rows: OrderedDict[tuple[str, str, str], dict[str, float]] = OrderedDict()

    async def _embed_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[Any, Any]:
        if not pairs:
            empty = np.zeros((0, 1))
            return empty, empty
        vectors = await self.embedder.embed(
            [q.lower() for q, _ in pairs] + [s.lower() for _, s in pairs]
        )
        return vectors[: len(pairs)], vectors[len(pairs) :]

    async def fit(self, examples: Sequence[Example]) -> TaughtModel:
        """A model from the bank's ``examples`` plus the packaged training cases."""
        return await self.fit_cases([as_case(e) for e in examples] + self.training)

    async def fit_cases(self, cases: Sequence[LabeledCase]) -> TaughtModel:
        """A model fit on exactly ``cases`` (the service's fit, and each fold of an
        out-of-fold fit in ``eqs_reward.offline.fidelity``, go through here)."""
        pairs = [(c.context.query, c.suggestion) for c in cases]
        q, s = await self._embed_pairs(pairs)
        matrix = features(q, s, pairs)
        return await asyncio.to_thread(fit_model, self.embedder.name, matrix, cases)

    async def predict(
        self, model: TaughtModel, scored: Sequence[tuple[str, str]]
    ) -> tuple[list[dict[str, float]], Any, Any]:
        """Per (query, suggestion), each dimension's probability: the lowest over the
        suggestion's ``views``. Also the query's and whole suggestion's embeddings (what the
        carry-over rule compares). The service's scores and every offline measure of the head
        are this function's."""
        owners: list[int] = []
        first: list[int] = []  # each text's whole view
        pairs: list[tuple[str, str]] = []
        for n, (query, text) in enumerate(scored):
            first.append(len(pairs))
            for view in views(text):
                owners.append(n)
                pairs.append((query, view))
        q, s = await self._embed_pairs(pairs)
        probabilities = model.predict(features(q, s, pairs))
        rows = [dict.fromkeys(DIMENSIONS, 1.0) for _ in scored]
        for row, n in enumerate(owners):
            for d in DIMENSIONS:
                rows[n][d] = min(rows[n][d], float(probabilities[d][row]))
        return rows, q[first], s[first]

    async def refit(self, version: Any) -> TaughtModel:
        """Fit and store the model of a bank version (the bank service calls this)."""
        model = await self.fit(version.examples)
        if self._store is not None and not version.tag:
            await self._store[1](version.version, self.family, model.to_json())
        self._loaded.pop(version.cache_id, None)
        return model

    async def _load(self, version: Any) -> _Loaded:
        key = version.cache_id
        loaded = self._loaded.get(key)
        if loaded is not None:
            self._loaded.move_to_end(key)
            return loaded
        async with self._locks.setdefault(key, asyncio.Lock()):
            loaded = self._loaded.get(key)
            if loaded is not None:
                return loaded
            try:
                model = await self._read_or_fit(version)
                pairs = [(e.context.query, e.suggestion) for e in version.examples]
                q, s = await self._embed_pairs(pairs)
            except HeadUnavailableError:
                raise
            except Exception as exc:
                raise HeadUnavailableError(
                    f"the taught model of few-shot version {version.version} could not be "
                    f"loaded or fitted ({exc!r}): check the embedder (EQS_REWARD_EMBEDDINGS_URL), "
                    "then retry"
                ) from exc
            labels = [e.labels.model_dump() for e in version.examples]
            loaded = _Loaded(model, q, s, labels)
            self._loaded[key] = loaded
            while len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
            self._locks.pop(key, None)
            return loaded

    async def _read_or_fit(self, version: Any) -> TaughtModel:
        if self._store is not None and not version.tag:
            stored = await self._store[0](version.version, self.family)
            if stored is not None:
                return TaughtModel.from_json(stored)
        return await self.refit(version)

    @property
    def family(self) -> str:
        """What a stored model is keyed by beside the version: features and embedder (a model
        of other features or another embedder's vectors is not this one's). A stacking recipe
        names the family its taught probabilities came from (``[fit] taught``)."""
        return f"{FEATURES}/{self.embedder.name}"

    async def head_version(self, bank_version: Any) -> str:
        return (await self._load(bank_version)).model.version

    async def score(
        self, items: Sequence[tuple[Context, Sequence[str]]], bank_version: Any
    ) -> HeadScores:
        loaded = await self._load(bank_version)
        scored = [(context.query, text) for context, texts in items for text in texts]
        if not scored:
            return [([], {}) for _ in items]
        keys = [(bank_version.cache_id, query, text) for query, text in scored]
        missing = [n for n, key in enumerate(keys) if key not in self._rows]
        if missing:
            fresh = await self._compute(loaded, [scored[n] for n in missing])
            for n, row in zip(missing, fresh, strict=True):
                self._rows[keys[n]] = row
            while len(self._rows) > ROWS_CACHED:
                self._rows.popitem(last=False)
        rows = [dict(self._rows[key]) for key in keys]
        out: HeadScores = []
        start = 0
        for _, texts in items:
            out.append((rows[start : start + len(texts)], {}))
            start += len(texts)
        return out

    async def _compute(
        self, loaded: _Loaded, scored: Sequence[tuple[str, str]]
    ) -> list[dict[str, float]]:
        """The head's work for texts it has not scored under this version yet."""
        rows, q, s = await self.predict(loaded.model, scored)
        self._carry_over(loaded, q, s, rows)
        return rows

    @staticmethod
    def _carry_over(loaded: _Loaded, q: Any, s: Any, rows: list[dict[str, float]]) -> None:
        """A bank example that paraphrases a scored suggestion under a near-identical query
        gives it its labels (the most similar example wins)."""
        if not loaded.labels:
            return
        suggestion_sim = np.asarray(s) @ np.asarray(loaded.suggestions).T
        query_sim = np.asarray(q) @ np.asarray(loaded.queries).T
        close = (suggestion_sim >= NEIGHBOUR_SIMILARITY) & (query_sim >= NEIGHBOUR_SIMILARITY)
        for n in np.flatnonzero(close.any(axis=1)):
            best = int(np.argmax(np.where(close[n], suggestion_sim[n], -1.0)))
            labels = loaded.labels[best]
            rows[n] = {d: NEIGHBOUR_PROBABILITY[labels[d]] for d in DIMENSIONS}
