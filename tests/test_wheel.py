"""The package as users get it: sdist and wheel built from this checkout, the wheel installed
into fresh virtual environments in a folder outside the checkout (so nothing can be read from the
source tree or ../shared), once with the core install and once with the ``server`` extra, which
then serves ``/v1/score`` against the stub judge with the packaged prompt and seed bank.

The Dockerfile installs this same wheel with the same extras."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eqs_reward._jsonl import read_jsonl
from eqs_reward._version import __version__
from tests._helpers import ROOT, ServerProcess, free_port, run, venv, wait_http

pytestmark = pytest.mark.wheel


def test_the_wheel_holds_every_subpackage_the_prompts_and_the_seed(wheel: Path, dist: Path) -> None:
    assert wheel.name == f"eqs_reward-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in (
        "client",
        "judge",
        "server",
        "server/bank",
        "server/routes",
        "server/heads",
        "offline",
        "catalog",
    ):
        assert f"eqs_reward/{package}/__init__.py" in names, package
    for prompt in [*(ROOT / "prompts").glob("*.toml"), *(ROOT / "prompts").glob("*/*.toml")]:
        relative = prompt.relative_to(ROOT / "prompts").as_posix()
        data = zipfile.ZipFile(wheel).read(f"eqs_reward/_data/prompts/{relative}")
        assert data == prompt.read_bytes()  # the top-level file, copied in whole
    for seed in (ROOT / "fewshot_bank").glob("*.jsonl"):
        assert f"eqs_reward/_data/fewshot_bank/{seed.name}" in names
    assert {"eqs_reward/_data/queries/wands_queries.tsv", "eqs_reward/py.typed"} <= names
    assert "eqs_reward/_data/demo/catalog.jsonl" in names
    assert len(list(dist.glob("eqs_reward-*.tar.gz"))) == 1


def test_the_core_install_is_the_client_alone(wheel: Path, tmp_path: Path) -> None:
    python = venv(tmp_path / "core", str(wheel))
    probe = (
        "import importlib.util, eqs_reward\n"
        "from eqs_reward import RewardClient, AsyncRewardClient, RewardServiceError\n"
        "from eqs_reward.client import trl, verl, openrlhf\n"
        "print(importlib.util.find_spec('fastapi') is None, importlib.util.find_spec('pydantic')"
        " is None, eqs_reward.__version__)\n"
    )
    checked = run(python, "-c", probe, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["True", "True", __version__]
    failed = run(python, "-c", "import fastapi", cwd=tmp_path)
    assert failed.returncode != 0 and "No module named 'fastapi'" in failed.stderr
    # A command whose extra is missing says which one to install, without a traceback.
    serve = run(tmp_path / "core" / "bin" / "eqs-reward", "serve", cwd=tmp_path)
    assert serve.returncode == 2
    assert "pip install 'eqs-reward[server]'" in serve.stderr and "Traceback" not in serve.stderr


@pytest.fixture
def served(wheel: Path, tmp_path: Path) -> Iterator[str]:
    python = venv(tmp_path / "server", f"{wheel}[server,catalog]")
    bin_dir = tmp_path / "server" / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EQS_REWARD_")}
    judge_port = free_port()
    judge = ServerProcess(
        [str(python), "-m", "eqs_reward.judge.stub", "--port", str(judge_port)],
        judge_port,
        env,
        tmp_path / "stub.log",
    )
    port = free_port()
    service = ServerProcess(
        [str(bin_dir / "eqs-reward"), "serve", "--port", str(port)],
        port,
        {
            **env,
            "EQS_REWARD_JUDGE_URL": f"{judge.url}/v1",
            "EQS_REWARD_JUDGE_MODEL": "stub",
            "EQS_REWARD_RECIPE_REFIT": "off",
            "EQS_REWARD_DATA_DIR": str(tmp_path / "data"),
        },
        tmp_path / "service.log",
    )
    # The demo catalog, loaded by the installed command into the service's data directory.
    loaded = run(
        bin_dir / "eqs-reward",
        "catalog",
        "load",
        "--demo",
        cwd=tmp_path,
        extra_env={"EQS_REWARD_DATA_DIR": str(tmp_path / "data")},
    )
    assert loaded.returncode == 0 and "360 products" in loaded.stdout, loaded.stderr
    judge.start(cwd=tmp_path)
    service.start(cwd=tmp_path)
    try:
        wait_http(judge.url + "/health", 60)
        wait_http(service.url + "/ready", 120)
        yield service.url
    finally:
        service.stop()
        judge.stop()
        print(service.log.read_text(errors="replace")[-3000:])


def test_the_server_extra_serves_from_the_installed_wheel(served: str) -> None:
    body = {
        "items": [
            {
                "context": {"query": "blender"},
                "suggestions": ["Which blenders under $80 can crush ice?", "Glass jar ones?"],
            }
        ],
        "options": {"k": 2},
    }
    response = httpx.post(served + "/v1/score", json=body, timeout=30)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["meta"]["prompt_version"] == "qualeqs-v2" and data["meta"]["fewshot_version"] == 1
    assert [s["status"] for s in data["results"][0]["suggestions"]] == ["ok", "ok"]
    seed = read_jsonl(ROOT / "fewshot_bank" / "seed.jsonl")
    bank = httpx.get(served + "/v1/fewshot", timeout=10).json()
    assert bank["example_count"] == len(seed)
    assert [e["suggestion"] for e in bank["examples"]] == [e["suggestion"] for e in seed]


def test_the_blended_recipe_runs_from_the_installed_wheel(served: str) -> None:
    """Every head from the wheel alone: the shopper's prompt, the recipes and wordllama's
    packaged embeddings (the service's environment has no hub cache)."""
    body = {
        "items": [
            {
                "context": {"query": "I want to buy a router"},
                "suggestions": [
                    "What kind of router do you want to buy?",
                    "Which Wi-Fi 6 routers under $100 cover a 3-bedroom house?",
                ],
            }
        ],
        "options": {"k": 2, "recipe": "qualeqs-blend"},
    }
    response = httpx.post(served + "/v1/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "ok"
    echo, refined = (s["signals"] for s in result["suggestions"])
    assert echo["exclusivity.novelty"] < 0.2 < 0.8 < refined["exclusivity.novelty"]
    assert set(result["set_signals"]) == {"exclusivity.diversity", "shopper.any_tap"}
    listing = httpx.get(served + "/v1/recipes", timeout=10).json()
    assert {r["id"] for r in listing["recipes"]} >= {"qualeqs", "qualeqs-blend", "qualeqs-grounded"}
    grounded = {**body, "options": {"k": 2, "recipe": "qualeqs-grounded"}}
    response = httpx.post(served + "/v1/score", json=grounded, timeout=60)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["suggestions"][1]["signals"]["retrieval.budget"] == 0.0  # cheapest: $149.99
