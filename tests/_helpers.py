"""Helpers shared by the tests (fixtures are in ``conftest.py``): real servers as subprocesses on
free ports (stub judge, the service, redis-server), settings for an in-process app, the contract's
error envelope, the docs' snippets, and fresh virtual environments outside the checkout (the
wheel as users install it, and peers' packages at pinned versions beside it)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from eqs_reward.server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: The packaged labeled cases (``dev.jsonl`` for validation, ``train.jsonl``): always present.
JUDGE_CASES = ROOT / "service" / "eqs_reward" / "_data" / "judge_cases"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code in ok:
                return
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout}s (last: {last!r})")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "judge_url": "http://stub-judge/v1",
        "judge_model": "stub",
        "data_dir": tmp_path,
        "judge_backoff_initial_s": 0.01,
        "judge_backoff_max_s": 0.05,
        # The stub judge's verdicts under the paper's recipe: what most tests assert. The
        # shipped default (qualeqs-taught) has its own tests, which name it.
        "default_recipe": "qualeqs",
        # The stub is not the judge the shipped stacking was fit for: no background refit
        # (its judge calls would land in every test's counts); tests/server/test_refit.py
        # turns it on.
        "recipe_refit": "off",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def scripted(*answers: Any) -> tuple[httpx.MockTransport, list[dict[str, Any]]]:
    """A mock transport answering in order (the last answer repeats): an exception (raised),
    an int status, a ``(status, json[, headers])`` tuple, or a dict (200 with that JSON).
    Returns the transport and the list of JSON bodies it received."""
    seen: list[dict[str, Any]] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"error": "x"})
        if isinstance(answer, tuple):
            headers = answer[2] if len(answer) > 2 else None
            return httpx.Response(answer[0], json=answer[1], headers=headers)
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handler), seen


class ServerProcess:
    """A subprocess serving HTTP on a port; stopped (process group and all) at teardown."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.argv, self.port, self.env, self.log = argv, port, env, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, cwd: Path = ROOT) -> ServerProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                cwd=cwd,
            )
        return self

    def kill(self, sig: int = 9) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)


def processes_with_env(name: str, value: str) -> dict[int, str]:
    """Live processes whose environment has ``name=value`` (children inherit it): what a
    command started, wherever it now sits in the process tree. Command lines by pid."""
    wanted = f"{name}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
    return {pid: line.decode(errors="replace") for pid, line in found.items()}


def wait_gone(name: str, value: str, timeout: float = 60) -> None:
    """Wait until no process carries ``name=value``; fail naming those left."""
    deadline = time.monotonic() + timeout
    while left := processes_with_env(name, value):
        assert time.monotonic() < deadline, f"processes outlived their command: {left}"
        time.sleep(0.5)


def service_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EQS_REWARD_")}
    env["EQS_REWARD_DEFAULT_RECIPE"] = "qualeqs"  # as in make_settings
    env["EQS_REWARD_RECIPE_REFIT"] = "off"  # as in make_settings
    env.update(values)
    return env


def stub_judge_process(tmp_path: Path, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    argv = [sys.executable, "-m", "eqs_reward.judge.stub", "--port", str(port)]
    return ServerProcess(argv, port, service_env(), tmp_path / f"stub-{port}.log")


def service_process(tmp_path: Path, port: int | None = None, **env: str) -> ServerProcess:
    port = port or free_port()
    argv = [sys.executable, "-m", "eqs_reward.cli", "serve", "--port", str(port)]
    values = {"EQS_REWARD_DATA_DIR": str(tmp_path / "data"), **env}
    return ServerProcess(argv, port, service_env(**values), tmp_path / f"service-{port}.log")


@contextlib.contextmanager
def stub_backed_service(tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    """A real service process on a stub judge process, both ready; stopped afterwards.
    ``.judge`` is the stub's process."""
    judge = stub_judge_process(tmp_path).start()
    service = service_process(
        tmp_path, EQS_REWARD_JUDGE_URL=judge.url + "/v1", EQS_REWARD_JUDGE_MODEL="stub", **env
    ).start()
    service.judge = judge  # type: ignore[attr-defined]
    try:
        wait_http(judge.url + "/health", 30)
        wait_http(service.url + "/ready", 60)
        yield service
    finally:
        service.stop()
        judge.stop()


def assert_envelope(response: httpx.Response, status: int, type_: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["message"]
    if type_:
        assert error["type"] == type_
    return str(error["message"])


def score_body(*items: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"items": list(items), "options": options}


def item(query: str, *suggestions: str, **extra: Any) -> dict[str, Any]:
    return {"context": {"query": query}, "suggestions": list(suggestions), **extra}


GOOD = "Which blenders under $80 can crush ice?"
GOOD2 = "Are there glass jar blenders with 1000 W motors?"
SHORT = "Any blenders?"


class RedisServer:
    """A redis-server of this test's own, so it can be killed and restarted on its port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def models_dir() -> Path:
    """Persistent across test sessions so the model is prepared once per machine."""
    return Path(os.environ.get("EQS_REWARD_TEST_MODELS_DIR", ROOT / ".eqs-reward" / "models"))


#: The stub judge behind ``stub_service`` fails every suggestion that contains this.
FAILME = "FAILME"


def docs_block(page: str, heading: str, language: str) -> str:
    """The first fenced ``language`` block under the heading that starts with ``heading`` in
    ``docs/<page>``: tests run the docs' snippets, so the docs cannot drift from them."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    start = next(i for i, line in enumerate(text.splitlines()) if line.startswith(heading))
    lines = text.splitlines()[start:]
    opening = lines.index(f"```{language}")
    closing = lines.index("```", opening + 1)
    return "\n".join(lines[opening + 1 : closing])


def run(
    *argv: str | Path, cwd: Path, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EQS_REWARD_", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra_env or {})
    return captured([str(a) for a in argv], cwd=cwd, env=env, timeout=timeout)


def venv(folder: Path, *requirements: str | Path) -> Path:
    """A new virtual environment at ``folder`` with ``requirements`` installed; its python."""
    made = run(sys.executable, "-m", "venv", folder, cwd=folder.parent)
    assert made.returncode == 0, made.stderr
    python = folder / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--quiet", *requirements, cwd=folder.parent)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    return python


def metric(source: str | Any, name: str) -> float:
    """The sum of the samples at ``/metrics`` (of a URL, or of a client such as a
    ``TestClient``) whose line starts with ``name`` (0 if none)."""
    answer = httpx.get(source + "/metrics") if isinstance(source, str) else source.get("/metrics")
    text = answer.text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def dashboard_and_alert_expressions() -> list[str]:
    """Every PromQL expression the dashboard and the alert rules evaluate."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/eqs-reward.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return exprs


def cli(
    *argv: str | Path, timeout: float, env: dict[str, str] | None = None, **flags: object
) -> subprocess.CompletedProcess[str]:
    """``python -m eqs_reward.cli *argv --flag value ...`` in a child process (each keyword a
    flag: ``batch_size=2`` is ``--batch-size 2``); its output captured as text."""
    options = [f"--{name.replace('_', '-')}={value}" for name, value in flags.items()]
    command = [sys.executable, "-m", "eqs_reward.cli", *map(str, argv), *options]
    return captured(command, env=env, timeout=timeout)


def captured(argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """A child process run to its end (``options`` as ``subprocess.run``'s), its output
    captured as text; the caller checks the exit status."""
    return subprocess.run(argv, capture_output=True, text=True, check=False, **options)


def started_threads(target: Callable[[int], None], n: int) -> list[threading.Thread]:
    """``n`` threads running ``target(0)`` ... ``target(n - 1)``, started (the load of a test
    that kills something under it)."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads
