"""The service and the reward-function file inside OpenRLHF 0.11.2's own code: its
``SingleTurnAgentExecutor`` (openrlhf/utils/agent.py) decodes prompt + response with special tokens
kept and posts one sample per request to ``--reward.remote_url`` (our ``/get_reward``) or calls
``reward_func`` from the file, its ``SamplesGenerator`` turns the answer into an ``Experience``, and
its ``compute_advantages_and_returns`` (openrlhf/trainer/ppo_utils/experience_maker.py) computes
the advantages. Only the policy's sampling is replaced (a scripted engine); the tokenizer is
SmolLM2's, whose chat template ends a response with ``<|im_end|>``.

OpenRLHF's GPU-only dependencies (flash-attn, deepspeed, ...) do not install on a CPU machine;
the advantage module imports them at its top, so they are replaced by inert modules while it is
imported. The functions that run are OpenRLHF's."""

from __future__ import annotations

import asyncio
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("openrlhf")
    import torch
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

from tests._helpers import ServerProcess, docs_block
from tests.client._completions import BAD, GOOD, R_GOOD, R_SHORT, SHORT, text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GPU_ONLY = (
    "flash_attn",
    "deepspeed",
    "torchdata",
    "ring_flash_attn",
    "liger_kernel",
    "bitsandbytes",
    "optimum",
    "loralib",
    "transformers_stream_generator",
    "pynvml",
)


class _Inert(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of the packages named (not installed here), answered with inert modules."""

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.split(".")[0] in self.missing:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        module = mock.MagicMock(name=spec.name)
        module.__path__ = []
        module.__spec__ = spec
        return module  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        return None


@pytest.fixture(scope="module")
def openrlhf_advantages() -> Iterator[Any]:
    """OpenRLHF's RemoteExperienceMaker and SamplesGenerator, imported with the GPU-only
    packages inert; the inert modules are dropped again afterwards."""
    before = set(sys.modules)
    finder = _Inert({m for m in GPU_ONLY if importlib.util.find_spec(m) is None})
    sys.meta_path.insert(0, finder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maker = importlib.import_module("openrlhf.trainer.ppo_utils.experience_maker")
            samples = importlib.import_module("openrlhf.trainer.ppo_utils.samples_generator")
        yield SimpleNamespace(maker=maker.RemoteExperienceMaker, generator=samples.SamplesGenerator)
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in finder.missing:
                del sys.modules[name]


class Engine:
    """vLLM's place in the executor: answers the scripted completion for each prompt."""

    def __init__(self, tokenizer: Any, completions: list[str]) -> None:
        self.tokenizer = tokenizer
        self.completions = list(completions)

    async def generate(
        self, prompt_ids: list[int], params: Any, multi_modal_data: Any = None
    ) -> Any:
        text = self.completions.pop(0)
        ids = [
            *self.tokenizer(text, add_special_tokens=False)["input_ids"],
            self.tokenizer.eos_token_id,
        ]
        output = SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def run_group(
    executor: Any, tokenizer: Any, completions: list[str], label: str
) -> list[dict[str, Any]]:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Suggest 3 follow-ups for: blender"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    engine = Engine(tokenizer, completions)
    params = SimpleNamespace(max_tokens=96, logprobs=None)

    async def all_samples() -> list[dict[str, Any]]:  # OpenRLHF runs a group's samples at once
        return list(
            await asyncio.gather(
                *[
                    executor.execute(prompt, label, params, 1024, tokenizer, engine)
                    for _ in completions
                ]
            )
        )

    return asyncio.run(all_samples())


def advantages(api: Any, outputs: list[dict[str, Any]], estimator: str) -> list[float]:
    experiences = []
    for index, output in enumerate(outputs):
        experience = api.generator._process_response_into_experience(None, output, max_len=2048)
        experience.index = [index]
        experience.kl = torch.zeros_like(experience.action_mask, dtype=torch.float32)
        experiences.append(experience)
    maker = api.maker.__new__(api.maker)
    args = SimpleNamespace(
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=estimator, gamma=1.0, lambd=1.0, no_std_norm=False)
        ),
        rollout=SimpleNamespace(n_samples_per_prompt=len(outputs)),
        reward=SimpleNamespace(clip_range=(-10.0, 10.0)),
    )
    maker.strategy = SimpleNamespace(args=args)
    maker.advantage_estimator = estimator
    maker.kl_ctl = SimpleNamespace(value=0.0)
    done = maker.compute_advantages_and_returns(experiences)
    return [e.advantages.sum().item() for e in done]


@pytest.mark.parametrize("via", ["endpoint", "file"])
def test_openrlhf_scores_neutralises_and_pins(
    stub_service: ServerProcess,
    smollm2: Path,
    openrlhf_advantages: Any,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    if via == "endpoint":  # --reward.remote_url http://host/get_reward?...
        url = f"{stub_service.url}/get_reward?group_size=4&fewshot_version=1"
    else:  # --reward.remote_url <site-packages>/eqs_reward/client/openrlhf.py
        url = str(Path(importlib.import_module("eqs_reward.client.openrlhf").__file__ or ""))
        monkeypatch.setenv("EQS_REWARD_URL", stub_service.url)
        monkeypatch.setenv("EQS_REWARD_GROUP_SIZE", "4")
        monkeypatch.setenv("EQS_REWARD_FEWSHOT_VERSION", "1")
    executor = SingleTurnAgentExecutor(remote_rm_url=url)
    # Each run its own shopper query: the service tells groups apart by their context.
    group = [text(GOOD), text(SHORT), text(BAD), text(GOOD)]
    outputs = run_group(executor, tokenizer, group, label=f"blender for {via}")
    # The decoded responses end with <|im_end|>, and the good sets are not penalised for it.
    query = tokenizer.decode(outputs[0]["observation_tokens"], skip_special_tokens=False)
    assert query.endswith("<|im_end|>")
    rewards = [float(torch.tensor(o["reward"]).flatten()[0]) for o in outputs]
    assert rewards[0] == pytest.approx(R_GOOD) and rewards[1] == pytest.approx(R_SHORT)
    assert rewards[2] == pytest.approx((2 * R_GOOD + R_SHORT) / 3)  # its group's mean
    logs = outputs[2]["extra_logs"]
    assert float(torch.tensor(logs["failed"]).flatten()[0]) == 1.0
    assert float(torch.tensor(logs["fewshot_version"]).flatten()[0]) == 1.0
    # reinforce_baseline also whitens every token of the batch afterwards (a shift shared by all
    # samples), so only these three can give a failed sample exactly 0 (README: OpenRLHF).
    for estimator in ("group_norm", "rloo", "dr_grpo"):
        values = advantages(openrlhf_advantages, outputs, estimator)
        assert abs(values[2]) < 1e-6, (estimator, values)  # the failed sample moves nothing
        assert values[0] > 0 > values[1], (estimator, values)
    if executor.reward_func is not None:  # OpenRLHF's own copy of the file holds a client
        client = executor.reward_func.__globals__["_client"]
        if client is not None:
            client.close()


def test_the_endpoint_takes_only_known_query_parameters(stub_service: ServerProcess) -> None:
    import httpx

    body = {"query": ["p" + text(GOOD)], "prompts": ["p"], "labels": ["blender"]}
    typo = httpx.post(f"{stub_service.url}/get_reward?fewshot_versoin=1", json=body)
    assert typo.status_code == 422 and "fewshot_versoin" in typo.json()["error"]["message"]
    missing = httpx.post(f"{stub_service.url}/get_reward?fewshot_version=999", json=body)
    assert missing.status_code == 422 and "fewshot_version" in missing.json()["error"]["message"]


def openrlhf_parser() -> Any:
    """OpenRLHF's own argument parser: the statements of ``openrlhf/cli/train_ppo_ray.py``'s
    ``__main__`` block up to ``parse_args`` (the module builds it there, not in a function)."""
    import argparse
    import ast

    source = Path(importlib.util.find_spec("openrlhf.cli.train_ppo_ray").origin or "").read_text()
    main = next(
        node for node in ast.parse(source).body if isinstance(node, ast.If)
    )  # if __name__ == "__main__":
    statements = []
    for statement in main.body:
        if isinstance(statement, ast.Assign) and "parse_args" in ast.unparse(statement.value):
            break
        statements.append(statement)
    from datetime import datetime  # the names the block uses from the module's imports

    namespace: dict[str, Any] = {"argparse": argparse, "datetime": datetime, "os": __import__("os")}
    exec(compile(ast.Module(statements, []), "train_ppo_ray.py", "exec"), namespace)
    return namespace["parser"]


def readme_commands() -> list[list[str]]:
    import shlex

    logical: list[str] = []
    for line in docs_block("trainers.md", "## OpenRLHF", "bash").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if logical and logical[-1].endswith("\\"):
            logical[-1] = logical[-1][:-1] + " " + line
        else:
            logical.append(line)
    return [shlex.split(line, comments=True) for line in logical if line.strip()]


def test_the_readme_flags_are_openrlhf_0_11s(stub_service: ServerProcess) -> None:
    from openrlhf.utils.config import hierarchize

    parser = openrlhf_parser()
    endpoint, from_file = readme_commands()
    required = ["--actor.model_name_or_path", "m"]
    args = hierarchize(parser.parse_args([*endpoint, *required]))
    assert args.reward.remote_url.endswith("/get_reward?group_size=4&fewshot_version=3")
    assert args.data.label_key == "query" and args.rollout.n_samples_per_prompt == 4
    assert args.algo.advantage.estimator == "group_norm"
    args = hierarchize(parser.parse_args([*from_file, *required]))
    assert args.reward.remote_url.endswith("eqs_reward/client/openrlhf.py")
    for old in (["--remote_rm_url", "http://x/get_reward"], ["--label_key", "query"]):
        with pytest.raises(SystemExit):  # renamed in 0.10.2: refused
            parser.parse_args([*old, *required])


@pytest.mark.parametrize("via", ["endpoint", "file"])
def test_a_pinned_recipe_reaches_openrlhf_with_every_signal(
    stub_service: ServerProcess, smollm2: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    import httpx

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    if via == "endpoint":
        url = f"{stub_service.url}/get_reward?group_size=4&fewshot_version=1&recipe=qualeqs-blend"
    else:
        url = str(Path(importlib.import_module("eqs_reward.client.openrlhf").__file__ or ""))
        monkeypatch.setenv("EQS_REWARD_URL", stub_service.url)
        monkeypatch.setenv("EQS_REWARD_GROUP_SIZE", "4")
        monkeypatch.setenv("EQS_REWARD_FEWSHOT_VERSION", "1")
        monkeypatch.setenv("EQS_REWARD_RECIPE", "qualeqs-blend")
    executor = SingleTurnAgentExecutor(remote_rm_url=url)
    label = f"blender recipe {via}"
    outputs = run_group(
        executor,
        tokenizer,
        [text(GOOD), text(SHORT), text(GOOD)],
        label=label,
    )
    logs = outputs[0]["extra_logs"]
    for name in ("judge.answerability", "exclusivity.novelty", "exclusivity.distinctness",
                 "shopper.tap", "exclusivity.diversity", "shopper.any_tap"):  # fmt: skip
        value = float(torch.tensor(logs[name]).flatten()[0])
        assert 0.0 <= value <= 1.0, name
    assert float(torch.tensor(logs["recipe:qualeqs-blend"]).flatten()[0]) == 1.0
    direct = httpx.post(
        stub_service.url + "/v1/score",
        json={
            "items": [{"context": {"query": label}, "completion": text(GOOD)}],
            "options": {"recipe": "qualeqs-blend", "score_mode": "soft", "fewshot_version": 1},
        },
    ).json()["results"][0]
    reward = float(torch.tensor(outputs[0]["reward"]).flatten()[0])
    assert reward == pytest.approx(direct["reward"], rel=1e-5)
    if executor.reward_func is not None:
        client = executor.reward_func.__globals__["_client"]
        if client is not None:
            client.close()
