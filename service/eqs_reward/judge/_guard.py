"""Run a command so that nothing it starts outlives it: ``python -m eqs_reward.judge._guard
[--grace S] -- command ...``.

vLLM's API server starts an engine process, which starts a worker, each holding gigabytes.
When whatever supervises the judge dies outright (SIGKILL, the OOM killer, Ray killing a
replica's actor), Linux's parent-death signal reaches only its direct child, and vLLM's own
shutdown does not always reach the engine and the worker: they stayed behind, orphaned. The
guard is that direct child, started as the leader of a new session, so that the command and
all it starts share its process group. Ray, on a worker's exit, SIGKILLs the worker's direct
children, which no process can catch; so the guard only starts a *watcher* (this module with
``--watch``) and waits for it. The watcher runs the command, and when it is told to stop
(SIGTERM, SIGINT, the guard's death, however it died) or the command exits, it stops the
whole group: SIGTERM, then SIGKILL to whatever is left after the grace period. Both exit with
the command's code.

Linux only (``/proc``, ``prctl``), like vLLM's CPU build.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["die_with_parent", "group_members", "guarded", "main"]

#: Seconds the group gets between SIGTERM and SIGKILL.
DEFAULT_GRACE_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_MODULE = "eqs_reward.judge._guard"


def guarded(command: Sequence[str], *options: str) -> list[str]:
    """The argv that runs ``command`` under the guard (``options``: the guard's own)."""
    return [sys.executable, "-m", _MODULE, *options, "--", *command]


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this (child) process when its parent dies, however it dies."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _processes(proc: Path) -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgrp) of every process in ``proc``."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            state, ppid, pgrp = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
            yield int(entry.name), state, int(ppid), int(pgrp)


def group_members(pgid: int, proc: Path = Path("/proc"), *, zombies: bool = False) -> set[int]:
    """Processes of process group ``pgid``; zombies only if asked (they hold nothing)."""
    return {
        pid
        for pid, state, _, pgrp in _processes(proc)
        if pgrp == pgid and (zombies or state != "Z")
    }


def _reap_orphans(command: int) -> None:
    """Reap the orphans handed to the watcher (a subreaper), not the command Popen waits for:
    where PID 1 reaps nothing (a container running the service as PID 1) they would stay."""
    for pid, state, ppid, _ in _processes(Path("/proc")):
        if ppid == os.getpid() and state == "Z" and pid != command:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _others() -> set[int]:
    """The group's members but the watcher and the guard waiting for it."""
    return group_members(os.getpgrp()) - {os.getpid(), os.getppid()}


def _signal_others(sig: signal.Signals) -> None:
    for pid in _others():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    _signal_others(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()  # reap the command, so it does not linger as our zombie
        _reap_orphans(child.pid)
        if not _others():
            return
        time.sleep(0.2)
    _signal_others(signal.SIGKILL)
    child.wait()
    time.sleep(0.2)
    _reap_orphans(child.pid)


def _wait(child: subprocess.Popen[bytes], stopping: list[int]) -> int | None:
    """Wait for ``child`` until it exits (its code) or a stop is asked or the parent dies."""
    parent = os.getppid()
    # the parent-death signal is missed if the parent died before it was set: poll too
    while not stopping and os.getppid() == parent:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(timeout=0.5)
    return None


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by a signal: as a shell reports it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="S")
    parser.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    args = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not args:
        parser.error("no command to run")
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    if not options.watch:
        if os.getpgrp() != os.getpid():
            os.setsid()  # never signal a group that is not the guard's own
        watcher = subprocess.Popen(
            guarded(args, "--watch", f"--grace={options.grace}"), preexec_fn=die_with_parent
        )
        code = _wait(watcher, stopping)
        if code is None:
            watcher.terminate()
            code = watcher.wait()
        return _exit_code(code)
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the group's orphans become the watcher's
    child = subprocess.Popen(args)
    code = _wait(child, stopping)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _stop_group(child, options.grace)
    return _exit_code(child.returncode if code is None else code)


if __name__ == "__main__":  # pragma: no cover - the guard's own process
    sys.exit(main())
