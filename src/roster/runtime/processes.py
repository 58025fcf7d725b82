"""Child processes in a session of their own: every command Roster runs (program runners, agent CLIs,
tool commands, condition watchers, KPI measure programs, the lane's workers) starts here, so that it
stays under control:

- **The timeout holds.** Output is read here, against a deadline, never by waiting for the pipes to close.
  At the deadline the whole process group is killed, the pipes are closed, the direct child is reaped
  (with a bounded wait) and :class:`subprocess.TimeoutExpired` is raised within about a second, even when
  a grandchild escaped the group (``setsid``, a double-forked daemon) and still holds stdout open.
- **Output is bounded.** Stdout is capped (``max_output``: past it the group is killed at once and
  :class:`OutputTooLarge` is raised) or kept as a tail (``stdout_tail``); stderr keeps only its last
  ``stderr_tail`` bytes (64 KiB by default). At most the cap or tail plus one read (64 KiB) is held.
- **Nothing is left behind.** When the command exits, whatever it left in its process group is killed;
  stdout held open by an escaped process is given up :data:`EXIT_GRACE` seconds after the exit.
- **Children die with Roster.** Where util-linux ``setpriv`` is installed (``/usr/bin/setpriv`` on Debian
  and most Linux systems), the command starts as ``setpriv --pdeathsig KILL -- argv...``: the kernel
  sends it SIGKILL when Roster dies, even by SIGKILL. ``setpriv`` execs the command, so its pid is the
  command's. Limits: the death signal reaches the direct child only (what it started is orphaned,
  unless it also dies with its parent); Linux sends it when the *thread* that started the child exits,
  which is fine here because :func:`run_in_session` blocks that thread until the child is reaped (the
  runtime's worker threads live as long as the dispatcher); without ``setpriv`` (macOS, minimal images)
  children outlive a killed Roster. No ``preexec_fn`` is used: it is unsafe with threads.

Standard library only: the lane's worker processes import it without paying for the runtime's imports.
"""

from __future__ import annotations

import errno
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

CHUNK = 65_536
"""Bytes read from a pipe at a time."""
STDERR_TAIL = 65_536
"""Bytes of stderr kept by default: its tail."""
EXIT_GRACE = 2.0
"""Seconds to wait, after the command exits, for its pipes to close (a process that escaped its group may
hold them open for ever); then the group is killed and the pipes closed."""
REAP_WAIT = 2.0
"""Seconds to wait for a killed child to be reaped before giving up on it (it is reaped later)."""
_POLL = 0.2
"""How often to look for the child's exit where ``pidfd_open`` is missing."""

SETPRIV = shutil.which("setpriv")
"""util-linux ``setpriv``, found once at import: how children get ``PDEATHSIG=SIGKILL``; ``None`` where absent."""


class OutputTooLarge(Exception):
    """The command printed more than ``limit`` bytes on stdout; it was killed after ``read`` bytes."""

    def __init__(self, argv: Sequence[str], read: int, limit: int) -> None:
        super().__init__(f"{' '.join(argv)!r} printed more than {limit} bytes on stdout (killed after {read})")
        self.argv = list(argv)
        self.read = read
        self.limit = limit


class SessionResult(subprocess.CompletedProcess):
    """:class:`subprocess.CompletedProcess`, plus how many bytes each stream printed in all
    (``stdout`` and ``stderr`` may hold only their tails)."""

    def __init__(self, args: list[str], returncode: int, stdout: bytes, stderr: bytes, *,
                 stdout_bytes: int, stderr_bytes: int) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes


class _Tail:
    """The last ``limit`` bytes of a stream (all of it when ``limit`` is ``None``), held in chunks: never
    more than ``limit`` plus one chunk."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.held = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.held += len(data)
        self.total += len(data)
        if self.limit is not None:
            while self.chunks and self.held - len(self.chunks[0]) >= self.limit:
                self.held -= len(self.chunks.popleft())

    def value(self) -> bytes:
        data = b"".join(self.chunks)
        return data if self.limit is None or len(data) <= self.limit else data[len(data) - self.limit:]


def run_in_session(argv: Sequence[str], *, cwd: Path | str | None, timeout: float, input: bytes | None = None,
                   env: Mapping[str, str] | None = None, max_output: int | None = None,
                   stdout_tail: int | None = None, stderr_tail: int | None = STDERR_TAIL) -> SessionResult:
    """Run ``argv`` in a new session with ``input`` (bytes) on stdin (none: an empty stdin), capturing
    stdout and stderr (bytes), and return a :class:`SessionResult` (a :class:`subprocess.CompletedProcess`).

    ``max_output``: the most stdout may print, in bytes; past it the process group is killed and
    :class:`OutputTooLarge` is raised. ``stdout_tail``: keep only the last so many bytes of stdout instead
    (``None``: all of it). ``stderr_tail``: the same for stderr (64 KiB by default; ``None``: all).

    Raises :class:`OSError` when it cannot start, and :class:`subprocess.TimeoutExpired` after ``timeout``
    seconds, once its whole process group is killed and its pipes closed (promptly, even if a process that
    left the group holds them open). See the module for what else is guaranteed, and its limits."""
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("empty command")
    _check_executable(argv[0], cwd, env)
    command = [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else argv
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(env) if env is not None else None)
    out, err = _Tail(stdout_tail), _Tail(stderr_tail)
    try:
        _pump(proc, input, out, err, deadline, max_output)
    except subprocess.TimeoutExpired:
        _abort(proc)
        raise subprocess.TimeoutExpired(argv, timeout, output=out.value(), stderr=err.value()) from None
    except OutputTooLarge:
        _abort(proc)
        raise OutputTooLarge(argv, out.total, max_output or 0) from None
    except BaseException:
        _abort(proc)
        raise
    _abort(proc)  # the command has exited: kill what it left in its group, close the pipes, reap it
    return SessionResult(argv, proc.returncode, out.value(), err.value(), stdout_bytes=out.total,
                         stderr_bytes=err.total)


def kill_process_group(proc: subprocess.Popen) -> None:
    """Kill a child started with ``start_new_session=True`` and everything still in its group, close its
    pipes and reap it (waiting at most :data:`REAP_WAIT` seconds: a process that left the group and holds
    the pipes open cannot delay it)."""
    _abort(proc)


def _pump(proc: subprocess.Popen, input: bytes | None, out: _Tail, err: _Tail, deadline: float,
          max_output: int | None) -> None:
    """Feed stdin and drain stdout and stderr until both close, or :data:`EXIT_GRACE` after the child exits.
    Raises :class:`subprocess.TimeoutExpired` at ``deadline`` (its arguments are filled in by the caller),
    :class:`OutputTooLarge` when stdout passes ``max_output``."""
    with selectors.DefaultSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        pending = memoryview(input or b"")
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin, selectors.EVENT_WRITE, None)
            else:
                _close(proc.stdin)
        pidfd = _pidfd(proc.pid)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            exited_at: float | None = None
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise subprocess.TimeoutExpired(proc.args, 0)
                if exited_at is None and pidfd is None and _exited(proc.pid):
                    exited_at = now
                pipes = [k for k in sel.get_map().values() if k.data is out or k.data is err]
                if exited_at is not None and (not pipes or now >= exited_at + EXIT_GRACE):
                    return
                wait = deadline - now
                if exited_at is not None:
                    wait = min(wait, exited_at + EXIT_GRACE - now)
                elif pidfd is None:
                    wait = min(wait, _POLL)
                for key, _ in sel.select(max(wait, 0)):
                    if key.data == "exit":
                        sel.unregister(key.fileobj)
                        exited_at = time.monotonic()
                    elif key.data is None:  # stdin
                        pending = _feed(sel, key.fileobj, pending)
                    else:
                        data = os.read(key.fd, CHUNK)
                        if not data:
                            sel.unregister(key.fileobj)
                            _close(key.fileobj)
                            continue
                        key.data.add(data)
                        if key.data is out and max_output is not None and out.total > max_output:
                            raise OutputTooLarge(proc.args, out.total, max_output)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _feed(sel: selectors.BaseSelector, stdin, pending: memoryview) -> memoryview:
    try:
        written = os.write(stdin.fileno(), pending[:CHUNK])
    except BlockingIOError:
        return pending
    except BrokenPipeError:  # the command stopped reading its input: not an error in itself
        written = len(pending)
    pending = pending[written:]
    if not pending:
        sel.unregister(stdin)
        _close(stdin)
    return pending


def _abort(proc: subprocess.Popen) -> None:
    """Kill the process group (its leader is not reaped yet, so its pid cannot have been reused), close the
    pipes, and reap the leader with a bounded wait."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        _close(pipe)
    try:
        proc.wait(timeout=REAP_WAIT)
    except subprocess.TimeoutExpired:
        pass  # stuck in the kernel (uninterruptible sleep): subprocess reaps it later


def _close(pipe) -> None:
    if pipe is None:
        return
    try:
        pipe.close()
    except OSError:
        pass


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or ``None``."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, without reaping it (so its process group id stays ours to kill)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _check_executable(program: str, cwd: Path | str | None, env: Mapping[str, str] | None) -> None:
    """Raise the :class:`OSError` starting ``program`` would, before ``setpriv`` hides it in an exit status."""
    if not SETPRIV:
        return
    if os.sep in program:
        candidates = [os.path.join(os.fspath(cwd) if cwd is not None else os.getcwd(), program)]
    else:
        base = os.fspath(cwd) if cwd is not None else os.getcwd()
        candidates = [os.path.join(base, folder, program) for folder in os.get_exec_path(env)]
    found = [path for path in candidates if os.path.exists(path)]
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if not any(os.path.isfile(path) and os.access(path, os.X_OK) for path in found):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
