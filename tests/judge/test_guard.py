"""The guard the embedded judge runs under (``eqs_reward.judge._guard``): nothing the judge
starts outlives it, whether its supervisor is killed outright, the command exits on its own, or
the guard is told to stop. Real processes shaped like vLLM's (an API server that starts an
engine that starts a worker); the real judge's processes are checked in tests/vllm/test_ray.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eqs_reward.judge._guard import group_members, guarded

#: The guard's command line as its docstring gives it.
GUARD = [sys.executable, "-m", "eqs_reward.judge._guard"]

#: Starts an "engine" that starts a "worker", both in the same process group, then waits
#: (or exits with the code given as its argument, leaving them orphaned).
SERVER = textwrap.dedent(
    """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c",
        "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
    if len(sys.argv) > 1:
        time.sleep(1)
        sys.exit(int(sys.argv[1]))
    time.sleep(300)
    """
)


def _wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _started(pgid: int, count: int) -> None:
    _wait_until(lambda: len(group_members(pgid)) >= count, "the command did not start")


def test_the_judge_group_dies_with_a_supervisor_killed_outright(tmp_path: Path) -> None:
    """The supervisor starts the guard as the embedded judge does (a new session, the
    parent-death signal), then is SIGKILLed: the guard, server, engine and worker all go."""
    pid_file = tmp_path / "guard.pid"
    supervisor = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from eqs_reward.judge._guard import die_with_parent
        guard = subprocess.Popen({guarded([sys.executable, "-c", SERVER])!r},
                                 start_new_session=True, preexec_fn=die_with_parent)
        open({str(pid_file)!r}, "w").write(str(guard.pid))
        time.sleep(300)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", supervisor])
    try:
        _wait_until(lambda: pid_file.exists() and pid_file.read_text(), "no guard started")
        pgid = int(pid_file.read_text())
        _started(pgid, 5)  # guard, watcher, server, engine, worker
        process.kill()
        process.wait()
        _wait_until(lambda: not group_members(pgid), "the judge's processes outlived it")
    finally:
        process.kill()


def test_the_group_dies_with_a_guard_killed_outright() -> None:
    """Ray, when a replica's actor exits, SIGKILLs the actor's direct children: the guard.
    Its watcher still takes the server, engine and worker down."""
    guard = subprocess.Popen(guarded([sys.executable, "-c", SERVER]), start_new_session=True)
    try:
        _started(guard.pid, 5)
        guard.kill()
        guard.wait()
        # orphans included: reaped by the watcher, not left as zombies (PID 1 may reap none)
        _wait_until(lambda: not group_members(guard.pid, zombies=True), "processes outlived it")
    finally:
        guard.kill()


def test_what_the_command_leaves_behind_goes_and_its_exit_code_is_kept() -> None:
    guard = subprocess.Popen(guarded([sys.executable, "-c", SERVER, "3"]))
    assert guard.wait(timeout=60) == 3
    _wait_until(
        lambda: not group_members(guard.pid, zombies=True),
        "the orphaned engine outlived the server",
    )


def test_sigterm_stops_the_group_and_sigkills_what_ignores_it() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    guard = subprocess.Popen(guarded([sys.executable, "-c", stubborn], "--grace", "1"))
    try:
        _started(guard.pid, 3)
        time.sleep(0.5)  # the command has set its handler
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(timeout=30) == 128 + signal.SIGKILL
        assert not group_members(guard.pid)
    finally:
        guard.kill()


def test_the_guard_leads_its_own_group_even_when_started_in_ours() -> None:
    """Started without a session of its own it must not stop its caller's group (ours)."""
    guard = subprocess.Popen(guarded([sys.executable, "-c", "pass"]))
    assert guard.wait(timeout=60) == 0
    assert os.getpid() in group_members(os.getpgrp())


def test_members_are_read_from_proc_whatever_the_command_name(tmp_path: Path) -> None:
    for pid, stat in {
        "11": "11 (VLLM::Worker) S 10 10 10 0",
        "12": "12 (odd) name (x) R 10 10 10 0",
        "13": "13 (zombie) Z 10 10 10 0",
        "14": "14 (other) S 1 14 14 0",
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(stat)
    (tmp_path / "self").mkdir()
    assert group_members(10, tmp_path) == {11, 12}
    assert group_members(10, tmp_path, zombies=True) == {11, 12, 13}


@pytest.mark.parametrize("argv", [[], ["--"], ["--grace", "1"]])
def test_no_command_is_a_usage_error(argv: list[str]) -> None:
    assert subprocess.run([*GUARD, *argv], capture_output=True).returncode == 2
