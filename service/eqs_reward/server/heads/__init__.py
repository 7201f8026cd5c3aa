"""Reward heads: named, versioned scorers giving signals in [0, 1] per suggestion and per set.

- ``judge`` and ``shopper`` are LLM heads (``LLMHead``): one call per (context, suggestion) to the
  judge endpoint with their own prompt template and output keys, through the scoring service's
  cache, single-flight, concurrency bound and retries. Only ``judge`` shows the few-shot bank.
- ``exclusivity`` compares sentence embeddings (``ExclusivityHead``): how far a suggestion moves
  from the query and the conversation, how far from its closest sibling, and the set's spread.
"""

from eqs_reward.server.heads._base import ComputedHead, HeadUnavailableError
from eqs_reward.server.heads.exclusivity import (
    Embedder,
    EmbeddingError,
    ExclusivityHead,
    OpenAIEmbedder,
    WordLlamaEmbedder,
    context_texts,
)
from eqs_reward.server.heads.llm import LLMHead

__all__ = [
    "ComputedHead",
    "Embedder",
    "EmbeddingError",
    "ExclusivityHead",
    "HeadUnavailableError",
    "LLMHead",
    "OpenAIEmbedder",
    "WordLlamaEmbedder",
    "context_texts",
]
