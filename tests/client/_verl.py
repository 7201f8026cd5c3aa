"""veRL 0.9.1's side of the veRL tests: its reward config with the docs' block merged in, a rollout
batch as its trainer hands it to the reward loop, and a Ray session whose workers see the
adapter's environment. Imported only by modules that have already skipped without veRL."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

with warnings.catch_warnings():  # third-party import-time deprecation noise, not ours
    warnings.simplefilter("ignore")
    import ray
    import torch
    import verl
    from omegaconf import OmegaConf
    from verl import DataProto

from tests._helpers import docs_block

ADAPTER = Path(importlib.import_module("eqs_reward.client.verl").__file__ or "")
#: The ``reward_extra_info`` keys every sample reports under the default recipe.
KEYS = {"score", "answerability", "factuality", "information_gain", "format_reward", "failed",
        "fewshot_version",
        # added with reward heads: the recipe and its heads' signals (the default's: the judge's)
        "recipe:qualeqs", "recipe_version",
        "judge.answerability", "judge.factuality", "judge.information_gain"}  # fmt: skip


@contextmanager
def ray_session(service_url: str, **env: str) -> Iterator[dict[str, str]]:
    """A local Ray session whose workers carry the adapter's environment (fixed when Ray starts):
    the service, groups of 4, few-shot version 1, soft scores, and ``env`` on top."""
    values = {
        "EQS_REWARD_URL": service_url,
        "EQS_REWARD_GROUP_SIZE": "4",
        "EQS_REWARD_FEWSHOT_VERSION": "1",
        "EQS_REWARD_SCORE_MODE": "soft",
        **env,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": values},
        )
    try:
        yield values
    finally:
        ray.shutdown()


def config(smollm2: Path, manager: str) -> Any:
    """veRL's own reward config (trainer/config/reward/reward.yaml) with the README's block
    merged in; only the file's location differs (an editable install keeps it in service/)."""
    readme = yaml.safe_load(docs_block("trainers.md", "## veRL", "yaml"))
    assert readme["reward"]["custom_reward_function"]["path"].endswith("eqs_reward/client/verl.py")
    readme["reward"]["custom_reward_function"]["path"] = str(ADAPTER)
    base = Path(verl.__file__).parent / "trainer" / "config" / "reward" / "reward.yaml"
    reward = OmegaConf.merge(OmegaConf.load(base), readme["reward"])
    assert reward.reward_manager.name == "naive"  # the README's; rate_limited is its alternative
    reward.num_workers = 2
    reward.reward_manager.name = manager
    reward.max_concurrent = 8  # rate_limited: at least rollout.n, so a group runs together
    return OmegaConf.create(
        {
            "reward": reward,
            "actor_rollout_ref": {"model": {"path": str(smollm2), "tokenizer_path": None}},
        }
    )


def batch(
    tokenizer: Any, completions: list[tuple[str, bool]], uids: list[str], queries: list[str]
) -> DataProto:
    """A rollout batch as veRL's trainer hands it to the reward loop: left-padded prompts,
    right-padded responses (ending with the EOS token when asked), masks, per-sample fields."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Suggest 3 follow-ups for: blender"}],
        add_generation_prompt=True,
    )["input_ids"]
    responses = []
    for completion, eos in completions:
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        responses.append([*ids, tokenizer.eos_token_id] if eos else ids)
    width = max(len(r) for r in responses) + 3
    pad = tokenizer.pad_token_id or 0
    n = len(completions)
    response_ids = torch.full((n, width), pad, dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for i, ids in enumerate(responses):
        response_ids[i, : len(ids)] = torch.tensor(ids)
        response_mask[i, : len(ids)] = 1
    prompts = torch.tensor([prompt] * n)
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": response_ids,
            "attention_mask": torch.cat([torch.ones_like(prompts), response_mask], dim=1),
        },
        non_tensors={
            "data_source": np.array(["eqs"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": q} for q in queries], dtype=object),
            "extra_info": np.array([{"index": u} for u in uids], dtype=object),
            "uid": np.array(uids, dtype=object),
        },
    )
