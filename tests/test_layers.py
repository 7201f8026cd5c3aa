"""The audiences stay apart: read every module's imports (the AST, not a run) and check who may
import whom. The core install (client) must work without the server's dependencies, and the
server must not grow a dependency on the trainer side or the offline tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._helpers import ROOT

PACKAGE = ROOT / "service" / "eqs_reward"

# What each part of the package may import from eqs_reward (besides itself).
ALLOWED = {
    "client": {
        "eqs_reward._version",
        "eqs_reward.types",
        "eqs_reward.rewards",
        "eqs_reward._trainer_inputs",
    },
    "server": {
        "eqs_reward.judge",
        "eqs_reward.types",
        "eqs_reward.rewards",
        "eqs_reward.evaluation",
        "eqs_reward._version",
        "eqs_reward._jsonl",
        "eqs_reward._toml",
        "eqs_reward._paths",
        "eqs_reward._resources",
        "eqs_reward._trainer_inputs",
        "eqs_reward.catalog",
        "eqs_reward.clicks",
    },
    "catalog": {"eqs_reward._jsonl"},
    "clicks": {"eqs_reward._jsonl"},
    "judge": {"eqs_reward.types", "eqs_reward.rewards", "eqs_reward._jsonl", "eqs_reward._toml"},
    "types": {"eqs_reward._jsonl"},
    "rewards": {"eqs_reward.types"},
    # The offline tools reach a running service through the client; in process they use only
    # the public modules that define what they measure (the heads, recipes and bank versions,
    # the labeled cases, the embedded judge's model preparation).
    "offline": {
        "eqs_reward.client",
        "eqs_reward.types",
        "eqs_reward.rewards",
        "eqs_reward.evaluation",
        "eqs_reward.clicks",
        "eqs_reward._jsonl",
        "eqs_reward._paths",
        "eqs_reward._resources",
        "eqs_reward._trainer_inputs",
        "eqs_reward.judge.cases",
        "eqs_reward.judge.embedded",
        "eqs_reward.server.heads",
        "eqs_reward.server.recipes",
        "eqs_reward.server.bank",
    },
    # The command line: each command calls one audience's public surface.
    "cli": {
        "eqs_reward.client",
        "eqs_reward.types",
        "eqs_reward.catalog",
        "eqs_reward.offline",
        "eqs_reward._jsonl",
        "eqs_reward._resources",
        "eqs_reward._version",
        "eqs_reward.judge.cases",
        "eqs_reward.server",
    },
}
#: Top-level helpers every part may share although their names are private.
SHARED_HELPERS = {
    "eqs_reward._jsonl",
    "eqs_reward._paths",
    "eqs_reward._resources",
    "eqs_reward._toml",
    "eqs_reward._trainer_inputs",
    "eqs_reward._version",
}
#: No module of the package grows past this many lines: one concern per module.
MAX_LINES = 500
#: Modules allowed over it, and by how much at most (none now).
OVER_MAX_LINES: dict[str, int] = {}
# Third-party modules the core install does not have.
NOT_IN_CORE = {
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "redis",
    "uvicorn",
    "prometheus_client",
    "sklearn",
    "numpy",
    "torch",
    "transformers",
    "trl",
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "eqs_reward":  # from eqs_reward import _resources
                found |= {f"eqs_reward.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("audience", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(audience: str) -> None:
    allowed = ALLOWED[audience]
    for path in PACKAGE.rglob("*.py"):
        if part(path) != audience:
            continue
        for module in imports(path):
            if not module.startswith("eqs_reward") or module.startswith(f"eqs_reward.{audience}"):
                continue
            assert any(module == a or module.startswith(a + ".") for a in allowed), (path, module)


def test_the_client_needs_nothing_beyond_the_core_install() -> None:
    core = [
        PACKAGE / "__init__.py",
        PACKAGE / "types.py",
        PACKAGE / "rewards.py",
        PACKAGE / "_trainer_inputs.py",
        PACKAGE / "_version.py",
    ]
    core += [p for p in (PACKAGE / "client").rglob("*.py")]
    for path in core:
        top = {m.split(".")[0] for m in imports(path)}
        # torch is imported inside OpenRLHF's reward_func only, where OpenRLHF runs.
        assert not (top & NOT_IN_CORE) - ({"torch"} if path.name == "openrlhf.py" else set()), path


def test_nothing_imports_another_packages_private_module() -> None:
    for path in PACKAGE.rglob("*.py"):
        package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
        for module in imports(path):
            parts = module.split(".")
            private = next((i for i, p in enumerate(parts) if p.startswith("_")), None)
            if not module.startswith("eqs_reward") or private is None:
                continue
            if ".".join(parts[: private + 1]) in SHARED_HELPERS:
                continue
            owner = ".".join(parts[:private])
            assert package == owner or package.startswith(owner + "."), (path, module)


def test_no_module_is_over_the_line_ceiling() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= OVER_MAX_LINES.get(name, MAX_LINES), (name, lines)
