"""The docs site builds with ``mkdocs build --strict`` (a broken link, a missing page or a snippet
that no longer resolves fails it), its configuration page is generated from the settings, and
the README stays a front door."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eqs_reward.server.settings import Settings
from tests._helpers import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [str(MKDOCS), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    for name in Settings.model_fields:
        assert f"EQS_REWARD_{name.upper()}" in page, name
    start = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert "Two commands for a fresh machine" in start and "Install, by audience" in start
    assert not (tmp_path / "site" / "hooks.py").exists()


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for heading in (
        "## Two commands for a fresh machine",
        "## Install, by audience",
        "## Quickstart",
    ):
        assert heading in readme
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT).as_posix()
        assert f"({relative})" in readme or page.name in ("index.md", "getting-started.md"), (
            relative
        )


def test_every_alert_links_to_its_runbook_entry() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert f'<a id="{anchor}"></a>' in (ROOT / page).read_text(), rule["alert"]
