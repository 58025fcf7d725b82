"""Every child process Roster starts stays under control: the timeout holds even when a grandchild escapes
the process group, output is bounded while it is read, nothing is left in the group, and children die
with Roster. Real subprocesses throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import alive

from roster.errors import MalformedOutput
from roster.runtime.processes import CHUNK, SETPRIV, OutputTooLarge, run_in_session
from roster.runtime.runners import MAX_OUTPUT_BYTES, Brief, CommandRunner

SRC = str(Path(__file__).resolve().parent.parent / "src")


def kill_if_sleep(pid_file: Path) -> None:
    """Clean up a ``sleep`` a test left running on purpose (checked by name, so a reused pid is spared)."""
    if not pid_file.exists() or not pid_file.read_text().strip():
        return
    pid = int(pid_file.read_text())
    try:
        if b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


def wait_for(path: Path, seconds: float = 10) -> None:
    end = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < end, f"{path} never written"
        time.sleep(0.02)


def call_in_thread(fn, limit: float):
    """``fn()`` in a thread: (its result or exception, seconds taken), or (None, None) if still running
    after ``limit`` seconds (the caller then unblocks it)."""
    box: dict = {}

    def target() -> None:
        started = time.monotonic()
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    return thread, box


def test_the_timeout_holds_when_a_grandchild_escapes_the_group_and_keeps_stdout_open(tmp_path):
    pid_file = tmp_path / "escaped.pid"
    command = ["sh", "-c", f"setsid sleep infinity & echo $! > {pid_file}; echo started; sleep infinity"]
    try:
        thread, box = call_in_thread(lambda: run_in_session(command, cwd=tmp_path, timeout=1), limit=5)
        if thread.is_alive():
            kill_if_sleep(pid_file)  # unblocks the old code, which waits for the escaped sleep to close stdout
            thread.join(5)
            pytest.fail("run_in_session outlived its 1 s timeout by more than 4 s")
        assert isinstance(box["value"], subprocess.TimeoutExpired), box["value"]
        assert box["seconds"] < 3, box["seconds"]
        assert box["value"].output == b"started\n"  # what was read before the deadline is kept
        wait_for(pid_file)
        assert alive(int(pid_file.read_text()))  # it escaped the group: beyond any killpg, cleaned up below
    finally:
        kill_if_sleep(pid_file)


def test_a_command_that_exits_returns_promptly_though_an_escaped_grandchild_holds_stdout(tmp_path):
    pid_file = tmp_path / "escaped.pid"
    command = ["sh", "-c", f"setsid sleep 60 & echo $! > {pid_file}; echo done"]
    try:
        thread, box = call_in_thread(lambda: run_in_session(command, cwd=tmp_path, timeout=20), limit=8)
        if thread.is_alive():
            kill_if_sleep(pid_file)
            thread.join(5)
            pytest.fail("run_in_session waited for the escaped grandchild")
        done = box["value"]
        assert isinstance(done, subprocess.CompletedProcess), done
        assert (done.returncode, done.stdout) == (0, b"done\n")
        assert box["seconds"] < 5, box["seconds"]
    finally:
        kill_if_sleep(pid_file)


def test_what_a_command_left_in_its_group_is_killed_when_it_exits(tmp_path):
    pid_file = tmp_path / "left.pid"
    try:
        done = run_in_session(["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pid_file}"], cwd=tmp_path,
                              timeout=10)
        assert done.returncode == 0
        pid = int(pid_file.read_text())
        end = time.monotonic() + 3
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        kill_if_sleep(pid_file)


def test_stdout_past_the_cap_kills_the_command_after_at_most_one_more_read(tmp_path):
    started = time.monotonic()
    with pytest.raises(OutputTooLarge) as caught:
        run_in_session(["head", "-c", "100000000", "/dev/zero"], cwd=tmp_path, timeout=30, max_output=1_048_576)
    assert caught.value.limit == 1_048_576
    assert 1_048_576 < caught.value.read <= 1_048_576 + CHUNK
    assert time.monotonic() - started < 5


def test_a_command_runner_printing_100_mb_is_malformed_output_without_holding_it_in_memory(tmp_path):
    with pytest.raises(MalformedOutput, match=r"printed more than 1048576 bytes on stdout.*artifact file"):
        CommandRunner("head -c 100000000 /dev/zero", workdir=tmp_path, timeout=30).run(Brief({"run_id": "r"}))
    probe = (
        "import resource, sys\n"
        f"sys.path.insert(0, {SRC!r})\n"
        "from roster.errors import MalformedOutput\n"
        "from roster.runtime.runners import Brief, CommandRunner\n"
        "from pathlib import Path\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    CommandRunner('head -c 100000000 /dev/zero', workdir=Path('.'), timeout=30).run(Brief({'run_id': 'r'}))\n"
        "except MalformedOutput:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    grown_kib = int(subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, check=True,
                                   timeout=60).stdout)
    assert grown_kib < 20_000, f"peak memory grew by {grown_kib} KiB reading a capped 100 MB output"
    assert MAX_OUTPUT_BYTES == 1_048_576


def test_stderr_and_a_stdout_tail_keep_only_their_last_bytes(tmp_path):
    script = "import sys; sys.stdout.write('o' * 5_000_000 + 'END'); sys.stderr.write('e' * 1_000_000 + 'TAIL')"
    done = run_in_session([sys.executable, "-c", script], cwd=tmp_path, timeout=30, stdout_tail=1000)
    assert len(done.stdout) == 1000 and done.stdout.endswith(b"END") and done.stdout_bytes == 5_000_003
    assert len(done.stderr) == 65_536 and done.stderr.endswith(b"TAIL") and done.stderr_bytes == 1_000_004


def test_input_larger_than_a_pipe_goes_in_while_output_comes_out(tmp_path):
    data = os.urandom(1_000_000)
    done = run_in_session(["cat"], cwd=tmp_path, timeout=30, input=data)
    assert (done.returncode, done.stdout) == (0, data)


def test_a_command_that_cannot_start_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_in_session(["no-such-program-xyz"], cwd=tmp_path, timeout=5)
    with pytest.raises(FileNotFoundError):
        run_in_session(["./missing.sh"], cwd=tmp_path, timeout=5)
    (tmp_path / "plain.txt").write_text("not a program")
    with pytest.raises(PermissionError):
        run_in_session(["./plain.txt"], cwd=tmp_path, timeout=5)


def test_many_threads_run_commands_at_once(tmp_path):
    results: dict[int, bytes] = {}

    def one(i: int) -> None:
        results[i] = run_in_session(["sh", "-c", "echo $0", str(i)], cwd=tmp_path, timeout=20).stdout

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: f"{i}\n".encode() for i in range(16)}


@pytest.mark.skipif(SETPRIV is None, reason="util-linux setpriv is not installed")
def test_a_child_dies_when_the_process_that_started_it_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent_code = (
        "import sys\n"
        f"sys.path.insert(0, {SRC!r})\n"
        "from roster.runtime.processes import run_in_session\n"
        f"run_in_session(['sh', '-c', 'echo $$ > {pid_file}; exec sleep 60'], cwd=None, timeout=120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        wait_for(pid_file)
        child = int(pid_file.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        end = time.monotonic() + 5
        while alive(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(child), "the child outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        kill_if_sleep(pid_file)

