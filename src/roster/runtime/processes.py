"""Child processes in a session of their own: every command Roster runs (program runners, agent CLIs,
tool commands, condition watchers, KPI measure programs, the lane's workers) starts here, so a timeout
kills the command and everything it started, never leaving grandchildren behind.

Standard library only: the lane's worker processes import it without paying for the runtime's imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_in_session(argv: Sequence[str], *, cwd: Path | str | None, timeout: float, input: bytes | None = None,
                   env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new session with ``input`` (bytes) on stdin (none: an empty stdin), capturing
    stdout and stderr (bytes). Raises :class:`OSError` when it cannot start, and
    :class:`subprocess.TimeoutExpired` after ``timeout`` seconds, once its whole process group is killed."""
    proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(env) if env is not None else None)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


def kill_process_group(proc: subprocess.Popen) -> None:
    """Kill a child started with ``start_new_session=True`` and everything it started, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
