"""claim + transition over HTTP against the same operations through the in-process service layer.

One store (SQLite file, WAL), one workflow ``open -> done``, T tasks per mode. ``--clients`` threads each
take their own share of the tasks and, per task, claim it with a lease and take the transition with the
lease's fencing token: through ``roster.store.Session`` in-process, then through the REST API served by
uvicorn on 127.0.0.1 in a server process of its own (so clients and server do not share one
interpreter lock), with ``httpx.Client`` (keep-alive, a bearer token, one client per thread). Reports
operations (claim + transition pairs) per second, p50 and p99 latency of one pair, and the ratio of HTTP
to in-process, measured side by side in one run.

Usage: python bench/rest.py [--tasks 600] [--clients 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from roster.specfile import parse_spec
from roster.store import Store

SPEC = """\
company: bench
workflows:
  job:
    states: [open, done]
    initial: open
    transitions:
      finish: {from: open, to: done, by: [worker]}
agents:
  worker: {tier: bounded-mutator}
humans:
  lead: {}
"""


SERVE = """
import sys
from roster.api.server import ApiServer
from roster.store import Store
ApiServer(Store.open(f"sqlite:///{sys.argv[1]}", lock_timeout=30), port=int(sys.argv[2])).run()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API server exited with {server.returncode}")
        try:
            httpx.get(f"{url}/api/v1/openapi.json", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the API server did not come up")


def drive(ids: list[int], clients: int, pair) -> tuple[float, list[float]]:  # noqa: ANN001
    """Run ``pair(client_index, task_id)`` over ``ids`` split across ``clients`` threads; wall s, latencies."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        mine = []
        for task_id in ids[index::clients]:
            started = time.perf_counter()
            pair(index, task_id)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def report(name: str, wall: float, latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000
    rate = len(ordered) / wall
    print(f"{name:>11}: {len(ordered)} claim+transition pairs in {wall:.2f} s: {rate:,.0f}/s, "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return rate, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}", lock_timeout=30)
        store.apply(parse_spec(SPEC), applied_by="lead")
        company = store.company("bench")
        token = company.issue_token("worker", actor="lead").token
        session = store.session(token)
        ids = [company.create_task(workflow="job", title=f"t{i}", actor="lead")[0].id for i in range(2 * args.tasks)]
        local_ids, http_ids = ids[:args.tasks], ids[args.tasks:]

        def local_pair(_index: int, task_id: int) -> None:
            lease = session.claim(task_id, run_id=f"local-{task_id}", ttl=60)
            session.transition(task_id, "finish", expected_version=1, fencing_token=lease.fencing_token)

        local = report("in-process", *drive(local_ids, args.clients, local_pair))

        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(Path(tmp) / "bench.db"), str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, server)
        http_clients = [httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"})
                        for _ in range(args.clients)]

        def http_pair(index: int, task_id: int) -> None:
            client = http_clients[index]
            lease = client.post(f"/tasks/{task_id}/claim", json={"seconds": 60})
            lease.raise_for_status()
            moved = client.post(f"/tasks/{task_id}/transitions", json={
                "transition": "finish", "expected_version": 1, "fencing_token": lease.json()["fencing_token"]})
            moved.raise_for_status()

        try:
            remote = report("HTTP", *drive(http_ids, args.clients, http_pair))
        finally:
            for client in http_clients:
                client.close()
            server.terminate()
            server.wait(10)
        assert company.verify_audit()[1] is None
        print(f"HTTP / in-process: throughput {remote[0] / local[0]:.2f}x, p50 latency {remote[1] / local[1]:.1f}x, "
              f"p99 latency {remote[2] / local[2]:.1f}x ({args.clients} concurrent clients)")


if __name__ == "__main__":
    main()
