"""Fresh virtual environments outside the checkout: the wheel as users install it, and peers'
packages at pinned versions beside it (nothing read from the source tree or ../shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(
    *argv: str | Path, cwd: Path, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EQS_REWARD_", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra_env or {})
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def venv(folder: Path, *requirements: str | Path) -> Path:
    """A new virtual environment at ``folder`` with ``requirements`` installed; its python."""
    made = run(sys.executable, "-m", "venv", folder, cwd=folder.parent)
    assert made.returncode == 0, made.stderr
    python = folder / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--quiet", *requirements, cwd=folder.parent)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    return python
