"""The exclusivity head: GQR's semantic exclusivity and MiniELM's diversity at the text level.

Per suggestion, from cosine similarities of sentence embeddings:

- ``novelty``: how far it moves from the shopper's query and the conversation so far (an echo of
  the query scores near 0);
- ``distinctness``: how far it is from its closest sibling in the set (a near-duplicate scores
  near 0; a lone suggestion 1).

Per set, ``diversity``: the mean over pairs of suggestions of the same distance (1 for one).

A similarity ``s`` becomes a distance signal by a linear ramp, ``clip((high - s) / (high - low))``:
1 at or below ``low`` (as unrelated as two different shopping questions get), 0 at or above
``high`` (a paraphrase). The bounds were measured on the real queries with the default embedder
(docs/concepts/heads.md). Embeddings come from a model whose weights ship in its PyPI package
(wordllama, MIT; loaded with downloads disabled) or from any OpenAI-compatible ``/v1/embeddings``
endpoint (vLLM serves embedding models).
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from eqs_reward.judge.cases import Context

__all__ = [
    "Embedder",
    "EmbeddingError",
    "ExclusivityHead",
    "OpenAIEmbedder",
    "WordLlamaEmbedder",
    "context_texts",
]

Vectors = Any  # numpy array of unit rows


def context_texts(context: Context) -> list[str]:
    """What a suggestion should move away from: the shopper's query and their earlier turns
    (not the assistant's: asking about what it said is a follow-up, not an echo)."""
    return [context.query, *(t.content for t in context.history if t.role == "user")]


class EmbeddingError(RuntimeError):
    """The embedder could not embed (endpoint unreachable or answering nonsense)."""


class Embedder(Protocol):
    @property
    def name(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


def _unit(rows: Any) -> Vectors:
    matrix = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class _Cached:
    """Embeddings kept per text (bounded LRU): a policy repeats itself."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._rows: OrderedDict[str, Any] = OrderedDict()

    def split(self, texts: Sequence[str]) -> list[str]:
        return [t for t in dict.fromkeys(texts) if t not in self._rows]

    def put(self, texts: Sequence[str], vectors: Vectors) -> None:
        for text, row in zip(texts, vectors, strict=True):
            self._rows[text] = row
            self._rows.move_to_end(text)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def get(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._rows[t] for t in texts])


class WordLlamaEmbedder:
    """wordllama's l2_supercat model (256 dimensions), from the weights in its wheel."""

    name = "wordllama-l2_supercat-256"

    def __init__(self) -> None:
        self._model: Any = None
        self._cache = _Cached()
        self._lock = asyncio.Lock()

    def _load(self) -> Any:
        import wordllama
        from wordllama import WordLlama

        # wordllama 0.4 looks for its bundled tokenizer in a folder the wheel does not have;
        # its cache_dir lookup finds both bundled files when pointed at the package.
        return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self._model is None:
            async with self._lock:
                if self._model is None:
                    self._model = await asyncio.to_thread(self._load)
        missing = self._cache.split(texts)
        if missing:
            # Normalised here, not by wordllama: a text with no known token embeds as zeros,
            # which its own normalisation turns into NaN (and a NaN reward).
            vectors = await asyncio.to_thread(self._model.embed, missing, norm=False)
            self._cache.put(missing, _unit(vectors))
        return self._cache.get(texts)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM serving an embedding model)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = f"openai:{model}"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )
        self._cache = _Cached()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        missing = self._cache.split(texts)
        if missing:
            try:
                response = await self._http.post(
                    "embeddings", json={"model": self.model, "input": missing}
                )
                response.raise_for_status()
                data = sorted(response.json()["data"], key=lambda d: d["index"])
                vectors = _unit([d["embedding"] for d in data])
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise EmbeddingError(f"embeddings endpoint: {exc!r}") from exc
            if vectors.shape[0] != len(missing):
                raise EmbeddingError("embeddings endpoint answered the wrong number of vectors")
            self._cache.put(missing, vectors)
        return self._cache.get(texts)


class ExclusivityHead:
    """See the module docstring."""

    name = "exclusivity"
    #: The default ramp, chosen by ``eqs-reward heads-report`` on 300 real queries with the
    #: default embedder (docs/concepts/heads.md; loadtest/heads/exclusivity.md).
    LOW = 0.75
    HIGH = 0.85

    def __init__(self, embedder: Embedder, low: float = LOW, high: float = HIGH) -> None:
        if not low < high:
            raise ValueError("low must be below high")
        self.embedder = embedder
        self.low = low
        self.high = high

    @property
    def version(self) -> str:
        return f"exclusivity-v1/{self.embedder.name}/{self.low:g}-{self.high:g}"

    async def head_version(self) -> str:
        return self.version

    def _distance(self, similarity: float) -> float:
        return min(1.0, max(0.0, (self.high - similarity) / (self.high - self.low)))

    async def score(
        self, items: Sequence[tuple[Context, Sequence[str]]]
    ) -> list[tuple[list[dict[str, float]], dict[str, float]]]:
        """For each item (its context, its suggestions): per-suggestion and set signals."""
        pairs = [(context_texts(context), list(suggestions)) for context, suggestions in items]
        texts = [t for context, suggestions in pairs for t in (*context, *suggestions)]
        vectors = await self.embedder.embed(texts) if texts else np.zeros((0, 1))
        rows = {t: vectors[n] for n, t in enumerate(texts)}
        out = []
        for context, suggestions in pairs:
            own = np.stack([rows[s] for s in suggestions]) if suggestions else np.zeros((0, 1))
            ctx = np.stack([rows[c] for c in context]) if context else None
            per: list[dict[str, float]] = []
            for n in range(len(suggestions)):
                echo = float(np.max(ctx @ own[n])) if ctx is not None else -1.0
                others = [float(own[m] @ own[n]) for m in range(len(suggestions)) if m != n]
                per.append(
                    {
                        "novelty": self._distance(echo),
                        "distinctness": self._distance(max(others)) if others else 1.0,
                    }
                )
            pairs_distance = [
                self._distance(float(own[a] @ own[b]))
                for a in range(len(suggestions))
                for b in range(a + 1, len(suggestions))
            ]
            diversity = math.fsum(pairs_distance) / len(pairs_distance) if pairs_distance else 1.0
            out.append((per, {"diversity": diversity}))
        return out
