"""The eqs-reward command line: bank export/import against the store, bank add and score against
a running service (a real process, judged by the stub judge process)."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from eqs_reward.cli import main
from eqs_reward.judge.cases import load_seed_examples
from tests._helpers import (
    ROOT,
    ServerProcess,
    free_port,
    service_env,
    stub_judge_process,
    wait_http,
)

TOKEN = "cli-token"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("EQS_REWARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EQS_REWARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path


def case(n: int) -> dict[str, object]:
    return {
        "context": {"query": "standing desk"},
        "suggestion": f"Desk number {n} that levitates without legs?",
        "labels": {"answerability": 1, "factuality": 0, "information_gain": 1},
        "rationale": "impossible",
        "source": "online_bad_case",
    }


def test_bank_export_import_round_trip(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = env / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(case(n)) for n in range(3)) + "\n")
    assert main(["bank", "import", str(cases), "--note", "from prod"]) == 0
    assert "created version 2: 3 added" in capsys.readouterr().out
    assert main(["bank", "import", str(cases)]) == 0  # idempotent
    assert "nothing new" in capsys.readouterr().out
    out = env / "v2.jsonl"
    assert main(["bank", "export", "--out", str(out)]) == 0
    seed = len(load_seed_examples(ROOT / "fewshot_bank"))
    assert f"wrote {seed + 3} examples of version 2" in capsys.readouterr().out
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[-1]["suggestion"] == case(2)["suggestion"] and "id" in exported[-1]
    assert main(["bank", "export", "--version", "1"]) == 0
    seed_lines = capsys.readouterr().out.strip().splitlines()
    assert len(seed_lines) == len(exported) - 3
    # Moving to another environment: the export imports as one more version, nothing twice.
    other = env / "other"
    other.mkdir()
    monkeypatch.setenv("EQS_REWARD_DATA_DIR", str(other))
    assert main(["bank", "import", str(out)]) == 0
    assert "created version 2: 3 added" in capsys.readouterr().out


@pytest.fixture
def running(running_service: Callable[..., ServerProcess]) -> ServerProcess:
    return running_service(EQS_REWARD_ADMIN_TOKEN=TOKEN)


def test_bank_add_and_score_against_a_service(
    running: ServerProcess,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = env / "bad.jsonl"
    cases.write_text(json.dumps(case(7)) + "\n")
    assert main(["bank", "add", str(cases), "--url", running.url]) == 2  # no token
    monkeypatch.setenv("EQS_REWARD_ADMIN_TOKEN", TOKEN)
    assert main(["bank", "add", str(cases), "--url", running.url, "--note", "cli"]) == 0
    assert capsys.readouterr().out.startswith("version 2: added ['ex-")
    items = env / "items.jsonl"
    items.write_text(
        json.dumps(
            {
                "id": "desk",
                "context": {"query": "standing desk"},
                "suggestions": ["Electric desks under $300 with memory presets?", "Any desks?"],
            }
        )
        + "\n"
    )
    assert main(["score", str(items), "--url", running.url]) == 0
    table = capsys.readouterr().out
    assert "few-shot v2" in table and "desk" in table and "r_q=0.500 ok" in table
    assert main(["score", str(items), "--url", running.url, "--json", "--mode", "soft"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["score_mode"] == "soft" and len(data["results"]) == 1


def test_training_options_are_generated_from_their_dataclasses() -> None:
    """Defaults and help are written once, on the options dataclasses: the parsed defaults are
    the dataclasses' defaults, and iterate's shared parser keeps each tool's options apart."""
    from eqs_reward.cli import build_parser
    from eqs_reward.cli._common import options_from
    from eqs_reward.offline.options import MineOptions, TrainOptions, WarmStartOptions

    parser = build_parser()
    assert options_from(parser.parse_args(["train"]), TrainOptions) == TrainOptions()
    assert options_from(parser.parse_args(["mine"]), MineOptions) == MineOptions()
    assert options_from(parser.parse_args(["warmstart"]), WarmStartOptions) == WarmStartOptions()
    args = parser.parse_args(
        ["iterate", "--lr", "1e-4", "--warm-lr", "3e-4", "--threshold", "0.2",
         "--threshold-sft", "0.7", "--model", "m", "--batch-size", "2", "--mode", "binary"]
    )  # fmt: skip
    train = options_from(args, TrainOptions)
    assert (train.learning_rate, train.batch_size, train.out) == (1e-4, 2, Path("runs/iterate"))
    warm = options_from(args, WarmStartOptions)
    assert (warm.learning_rate, warm.threshold, warm.batch_size) == (3e-4, 0.7, 8)
    mine = options_from(args, MineOptions)
    assert (mine.threshold, mine.candidates, mine.model) == (0.2, None, Path("m"))
    assert {train.score_mode, warm.score_mode, mine.score_mode} == {"binary"}
    with pytest.raises(SystemExit):
        parser.parse_args(["iterate", "--candidates", "x.jsonl"])  # mining there is generated


def test_serve_makes_an_admin_token_for_its_data_dir_once(tmp_path: Path) -> None:
    """``make serve`` (``--create-admin-token``): with no token configured, one is written to
    the data directory (readable by its owner only), logged by path, and used; a restart
    keeps it."""
    judge = stub_judge_process(tmp_path).start()
    env = service_env(
        EQS_REWARD_DATA_DIR=str(tmp_path / "data"),
        EQS_REWARD_JUDGE_URL=judge.url + "/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
    )
    path = tmp_path / "data" / "admin-token"
    tokens = []
    try:
        for run in range(2):
            port = free_port()
            argv = [sys.executable, "-m", "eqs_reward.cli", "serve", "--port", str(port)]
            log = tmp_path / f"serve-{run}.log"
            service = ServerProcess([*argv, "--create-admin-token"], port, env, log).start()
            try:
                wait_http(service.url + "/ready", 60)
                token = path.read_text().strip()
                tokens.append(token)
                signed_in = httpx.post(
                    service.url + "/console/login", data={"token": token}, follow_redirects=False
                )
                assert signed_in.status_code == 303
            finally:
                service.stop()
            assert str(path) in log.read_text()
    finally:
        judge.stop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 32
