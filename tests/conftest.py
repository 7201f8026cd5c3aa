"""Shared fixtures: an app with the stub judge injected in-process, real Redis, a running service
on a stub judge process, the packaged SmolLM2 model, and the wheel built once per session. Their
helpers are in ``tests/_helpers.py``."""

from __future__ import annotations

import contextlib
import itertools
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from eqs_reward import _resources
from eqs_reward.catalog import CatalogBackend, PostgresCatalog, SQLiteCatalog, read_products
from eqs_reward.judge.stub import StubJudge
from eqs_reward.server import build_app
from tests._helpers import (
    FAILME,
    ROOT,
    RedisServer,
    ServerProcess,
    make_settings,
    models_dir,
    run,
    stub_backed_service,
)


@pytest.fixture
def stub() -> StubJudge:
    return StubJudge()


@pytest.fixture
def make_client(tmp_path: Path, stub: StubJudge) -> Iterator[Any]:
    """Factory: a TestClient over an app whose judge is the in-process stub."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        settings = make_settings(tmp_path, **overrides)
        app = build_app(settings, judge_transport=httpx.ASGITransport(app=stub.app()))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: the machine's on 6379 if it answers, else a redis-server we start."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping()
        yield "redis://127.0.0.1:6379/0"
        return
    except redis.RedisError:
        pass
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"eqs-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct prepared from the packaged GGUF (the embedded judge's model, and
    the trainer tests' tokenizer and policy)."""
    from eqs_reward.judge.embedded import prepare_model

    return prepare_model(models_dir())


@pytest.fixture(scope="module")
def stub_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real service process whose stub judge fails, on purpose, every suggestion holding
    FAILME (one attempt: failures are quick). ``.judge`` is the stub's process."""
    tmp = tmp_path_factory.mktemp("stub-service")
    env = {"EQS_REWARD_JUDGE_MAX_RETRIES": "0", "EQS_REWARD_ADMIN_TOKEN": "trainer-token"}
    with stub_backed_service(tmp, **env) as service:
        judge = service.judge  # type: ignore[attr-defined]
        httpx.post(judge.url + "/_stub/config", json={"fail_pattern": FAILME})
        yield service


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built from this checkout (once per session)."""
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("eqs_reward-*.whl")
    return found


@pytest.fixture
def running_service(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``running_service(**env)`` starts a real service process on a stub judge process
    (both ready; ``.judge`` is the stub's) and stops both at teardown. Each call gets its own
    data directory."""
    started = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def start(**env: str) -> ServerProcess:
            folder = tmp_path / f"service-{next(started)}"
            folder.mkdir()
            return stack.enter_context(stub_backed_service(folder, **env))

        yield start


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"eqs_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CatalogBackend]:
    backend: CatalogBackend
    if request.param == "sqlite":
        backend = SQLiteCatalog(tmp_path / "catalog.sqlite3")
    else:
        backend = PostgresCatalog(request.getfixturevalue("postgres_url"))
    await backend.load(read_products(_resources.demo_dir() / "catalog.jsonl"))
    yield backend
    await backend.close()
