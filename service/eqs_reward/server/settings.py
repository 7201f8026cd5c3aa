"""Typed settings, read from the environment with the ``EQS_REWARD_`` prefix (or a ``.env`` file).

Nothing here is created at import time: ``create_app`` and the CLI build a ``Settings`` when they
start, and tests build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eqs_reward import _resources
from eqs_reward._paths import default_data_dir

#: Largest integer a version or count may be (SQLite's INTEGER is 64-bit signed).
MAX_INT64 = 2**63 - 1
#: A share between 0 and 1.
Share = Annotated[float, Field(ge=0, le=1)]


class Settings(BaseSettings):
    """Everything an operator can set. Field names map to ``EQS_REWARD_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="EQS_REWARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- judge -----------------------------------------------------------------------------
    judge_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (…/v1). Unset: start the embedded judge.",
    )
    judge_model: str = Field(default="smollm2-135m-instruct", description="model name sent")
    judge_api_key: str | None = Field(default=None, description="bearer key for the judge, if any")
    judge_timeout_s: float = Field(default=30.0, gt=0, description="one judge call's timeout")
    judge_connect_timeout_s: float = Field(default=5.0, gt=0)
    judge_max_retries: int = Field(default=3, ge=0, le=10, description="retries after a failure")
    judge_backoff_initial_s: float = Field(default=0.25, ge=0)
    judge_backoff_max_s: float = Field(default=4.0, ge=0)
    judge_concurrency: int = Field(
        default=32, ge=1, description="judge calls in flight at once (vLLM batches them)"
    )
    judge_queue_max: int = Field(
        default=1024, ge=0, description="judge calls that may wait for a slot; beyond: 429"
    )
    judge_max_tokens: int = Field(default=24, ge=8)
    judge_top_logprobs: int = Field(default=10, ge=1, le=20)
    judge_output_constraint: Literal["regex", "json_schema", "none"] = Field(
        default="regex",
        description="regex: vLLM structured_outputs (compact, fast); json_schema: response_format "
        "for other OpenAI-compatible servers; none: free text parsed leniently",
    )
    judge_chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description='e.g. {"enable_thinking": false} for Qwen3'
    )
    prompt_version: str = Field(default="qualeqs-v2")
    guard_version: str = Field(
        default="guard-v1", description="reward-hacking guard rules in prompts/guards/"
    )
    default_recipe: str = Field(
        default="qualeqs-taught",
        description="the recipe of a request that names none (prompts/recipes/<id>.toml); "
        "qualeqs-taught measures best on labeled cases (loadtest/fidelity/report.md), qualeqs "
        "is the paper's exact reward",
    )
    recipe_refit: Literal["off", "background"] = Field(
        default="background",
        description="a stacking recipe fit for another judge model or prompt than this service's: "
        "background: refit it on the packaged fitting cases with this judge (about 700 judge "
        "calls) and swap it in; off: keep it, and only say so (log, metric, GET /v1/recipes)",
    )
    prompts_dir: Path | None = Field(
        default=None, description="judge prompt templates; unset: the ones packaged in the wheel"
    )
    fewshot_dir: Path | None = Field(
        default=None, description="seed few-shot bank (JSONL); unset: the packaged seed"
    )

    @property
    def prompts_path(self) -> Path:
        return self.prompts_dir or _resources.prompts_dir()

    @property
    def fewshot_seed_path(self) -> Path:
        return self.fewshot_dir or _resources.fewshot_seed_dir()

    # --- embedded judge ----------------------------------------------------------------------
    embedded_port: int = Field(default=8011, ge=1, le=65535)
    embedded_kvcache_gib: int = Field(default=2, ge=1)
    embedded_max_model_len: int = Field(default=4096, ge=512)
    embedded_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description="the judge's vLLM dtype; auto: bfloat16 on CPUs with native bf16, else float32",
    )
    embedded_start_timeout_s: float = Field(default=600.0, gt=0)
    embedded_restart_backoff_max_s: float = Field(default=30.0, gt=0)

    # --- requests ----------------------------------------------------------------------------
    request_deadline_s: float = Field(default=120.0, gt=0, description="whole-request deadline")
    max_items: int = Field(default=256, ge=1)
    max_suggestions_per_item: int = Field(default=16, ge=1)
    max_text_chars: int = Field(default=1000, ge=1)
    max_history_turns: int = Field(default=20, ge=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    default_k: int = Field(default=3, ge=1)
    max_suggestion_tokens: int = Field(default=30, ge=1)

    openrlhf_failure_policy: Literal["group_mean", "zero"] = Field(
        default="group_mean", description="/get_reward: what a failed sample gets"
    )

    # --- reward heads ------------------------------------------------------------------------
    embeddings_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (…/v1) serving /embeddings for the exclusivity "
        "head; unset: wordllama's packaged weights, in process",
    )
    embeddings_model: str = Field(default="", description="the model name at embeddings_url")
    embeddings_api_key: str | None = None
    embeddings_timeout_s: float = Field(default=30.0, gt=0)
    catalog_backend: Literal["sqlite", "postgres", "none"] = Field(
        default="sqlite",
        description="the retrieval head's catalog: sqlite (FTS5, a file in data_dir; one "
        "replica), postgres (full-text search, shared by replicas) or none",
    )
    catalog_postgres_url: str | None = Field(
        default=None, description="postgresql://... for catalog_backend=postgres"
    )

    # --- cache -------------------------------------------------------------------------------
    cache_max_entries: int = Field(default=100_000, ge=0, description="in-process LRU size")
    redis_url: str | None = None
    redis_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="score TTL in Redis")
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="a Redis lookup slower than this is skipped"
    )

    # --- few-shot bank -----------------------------------------------------------------------
    fewshot_store: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="sqlite: a file in data_dir (one replica); redis: shared by replicas",
    )
    group_memory: Literal["memory", "redis"] = Field(
        default="memory",
        description="where a failed sample's group mean comes from: memory (this process) or "
        "redis (shared by replicas, whichever replica scored the group's other samples)",
    )
    fewshot_token_budget: int = Field(
        default=4000, ge=0, description="prompt tokens for examples; 0: no limit"
    )
    fewshot_max_examples_per_add: int = Field(default=100, ge=1)
    taught_cases: list[Path] = Field(
        default_factory=list,
        description="labeled case files (JSONL, judge_cases format) the taught head fits on, "
        "beside the packaged training cases and the bank's examples",
    )
    fewshot_version_cache_bytes: int = Field(
        default=32 * 2**20,
        ge=0,
        description="bank versions kept in memory once read, bounded by their examples' JSON "
        "size (in Python objects they take a few times that); 0: keep none but the active one",
    )
    fewshot_gate_tolerance: float | None = Field(
        default=None,
        ge=0,
        description="refuse an add that lowers mean agreement on the gate "
        "cases by more than this (unless forced); unset: no gate",
    )
    fewshot_gate_cases: Path | None = Field(
        default=None, description="labeled cases (JSONL, judge_cases format) for the gate"
    )
    fewshot_gate_attacks: Path | None = Field(
        default=None,
        description="attacks (JSONL of context and suggestion, e.g. from 'eqs-reward redteam "
        "--write-corpus'): the gate also refuses an add that raises their success rate",
    )
    fewshot_gate_attack_tolerance: float = Field(
        default=0.0, ge=0, le=1, description="how much the attack success rate may rise"
    )
    fewshot_gate_min_judged: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="a gate or dry run that judged fewer than this share of its cases (on either "
        "side) refuses instead of comparing",
    )
    redis_key_prefix: str = Field(default="eqs-reward:")

    # --- review queue ------------------------------------------------------------------------
    review_enabled: bool = Field(
        default=True,
        description="sample scored suggestions worth an operator's look into the review queue "
        "(kept in the bank's store). Contexts may hold shoppers' data: switch it off where "
        "they must not be kept",
    )
    review_max_items: int = Field(
        default=10_000, ge=0, description="unlabeled cases kept; the oldest go first"
    )
    review_retention_s: float = Field(
        default=7 * 86400.0, gt=0, description="unlabeled cases older than this are dropped"
    )
    # Shares of a kind of suggestion sampled, and the conditions that sample every one.
    review_failure_rate: Share = Field(default=1.0, description="of judge failures (after retries)")
    review_refusal_rate: Share = Field(
        default=0.1, description="of guard refusals (they come in floods)"
    )
    review_uniform_rate: Share = Field(
        default=0.01, description="of every suggestion, for calibration"
    )
    review_first: int = Field(default=200, ge=0, description="first suggestions, all sampled")
    review_disagreement_min: float = Field(
        default=0.15, ge=0, le=0.25, description="the disagreement u_q that samples an item"
    )
    review_near_margin: float = Field(
        default=0.05, ge=0, le=0.5, description="how close to 0.5 a soft judge verdict is sampled"
    )
    review_taught_gap: Share = Field(
        default=0.6,
        description="the gap between the judge and the taught head, on a dimension, that samples",
    )
    review_buffer: int = Field(
        default=1000,
        ge=1,
        description="samples waiting to be written; past it a sample is dropped and counted, so "
        "scoring never waits on the queue",
    )

    # --- operator console --------------------------------------------------------------------
    console_session_s: float = Field(
        default=8 * 3600.0, gt=0, description="how long a console sign-in lasts"
    )
    console_grafana_url: str | None = Field(
        default=None, description="the Grafana dashboard the console links to"
    )

    # --- admin and storage -------------------------------------------------------------------
    admin_token: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    model_cache_dir: Path | None = Field(
        default=None, description="where the embedded model is prepared; default data_dir/models"
    )

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    # --- serving -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http_header_timeout_s: float = Field(
        default=30.0, gt=0, description="a client must send its request head within this"
    )
    http_body_timeout_s: float = Field(
        default=60.0, gt=0, description="and its whole body within this"
    )

    @model_validator(mode="after")
    def _gate_needs_cases(self) -> Settings:
        if self.fewshot_gate_tolerance is not None and (
            self.fewshot_gate_cases is None or not self.fewshot_gate_cases.is_file()
        ):
            raise ValueError(
                "EQS_REWARD_FEWSHOT_GATE_TOLERANCE needs EQS_REWARD_FEWSHOT_GATE_CASES, a JSONL "
                "file of labeled cases"
            )
        return self

    @model_validator(mode="after")
    def _postgres_needs_a_url(self) -> Settings:
        if self.catalog_backend == "postgres" and not self.catalog_postgres_url:
            raise ValueError(
                "EQS_REWARD_CATALOG_BACKEND=postgres needs EQS_REWARD_CATALOG_POSTGRES_URL"
            )
        return self

    @model_validator(mode="after")
    def _embeddings_need_a_model(self) -> Settings:
        if self.embeddings_url and not self.embeddings_model:
            raise ValueError("EQS_REWARD_EMBEDDINGS_URL needs EQS_REWARD_EMBEDDINGS_MODEL")
        return self

    @field_validator("judge_url", "embeddings_url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")

    @property
    def embedded(self) -> bool:
        """True when the service owns its judge (no URL configured)."""
        return self.judge_url is None

    @property
    def effective_judge_url(self) -> str:
        if self.judge_url is not None:
            return self.judge_url
        return f"http://127.0.0.1:{self.embedded_port}/v1"
