"""Leases with fencing tokens: a run claims, renews and releases; a stale holder cannot write; a dead
runner's lease just expires; the kill switch releases leases at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC

from roster.errors import Denied, LeaseHeld, StaleFencingToken, UsageError
from roster.specfile import parse_spec
from roster.store import Store

TWO_PLANNERS = FIX_LINT.replace("  builder:", "  planner2: {reports_to: alice, tier: bounded-mutator, roles: [planning]}\n"
                                "  builder:").replace("by: [planner]", "by: [planner, planner2]")


@pytest.fixture
def leased(db_path, tmp_path, clock):
    store = Store.open(f"sqlite:///{db_path}", clock=clock, artifact_root=tmp_path / "a")
    store.apply(parse_spec(TWO_PLANNERS), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    yield company, task
    store.close()


def test_claim_gives_increasing_fencing_tokens_and_blocks_others(leased, clock):
    company, task = leased
    first = company.claim(task.id, actor="planner", run_id="r1", ttl=30)
    assert first.fencing_token == 1 and first.holder == "planner"
    with pytest.raises(LeaseHeld):
        company.claim(task.id, actor="planner2", run_id="r2", ttl=30)
    assert company.audit_log(action="lease.claim.rejected")[-1].data["error"]["error"] == "lease-held"
    clock.advance(31)
    second = company.claim(task.id, actor="planner2", run_id="r2", ttl=30)
    assert second.fencing_token == 2
    assert company.audit_log(action="lease.claim")[-1].data["took_over"] == "planner"


def test_a_stale_token_cannot_write_and_the_attempt_is_audited(leased, clock):
    company, task = leased
    stale = company.claim(task.id, actor="planner", run_id="r1", ttl=10)
    clock.advance(11)
    fresh = company.claim(task.id, actor="planner2", run_id="r2", ttl=10)
    with pytest.raises(StaleFencingToken) as info:
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC},
                           fencing_token=stale.fencing_token)
    assert (info.value.presented, info.value.current) == (1, 2)
    assert company.get_task(task.id).state == "found"
    event = company.audit_log(action="task.transition.rejected")[-1]
    assert event.principal == "planner" and event.data["error"]["error"] == "stale-fencing-token"
    with pytest.raises(StaleFencingToken):
        company.record_check(task.id, "lint_clean", passed=True, actor="planner", fencing_token=stale.fencing_token)
    moved = company.transition(task.id, "plan", actor="planner2", expected_version=1, writes={"spec": GOOD_SPEC},
                               fencing_token=fresh.fencing_token)
    assert moved.state == "planned"


def test_a_write_without_a_token_may_not_touch_a_live_lease_of_someone_else(leased, clock):
    company, task = leased
    company.claim(task.id, actor="planner2", run_id="r2", ttl=10)
    with pytest.raises(LeaseHeld):
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    clock.advance(11)  # expired: the lease holds nothing any more
    assert company.transition(task.id, "plan", actor="planner", expected_version=1,
                              writes={"spec": GOOD_SPEC}).state == "planned"


def test_renew_extends_and_release_frees_but_only_for_the_holder(leased, clock):
    company, task = leased
    lease = company.claim(task.id, actor="planner", run_id="r1", ttl=10)
    clock.advance(8)
    renewed = company.renew(task.id, actor="planner", fencing_token=lease.fencing_token, ttl=10)
    clock.advance(8)  # 16 s after the claim, still held thanks to the renewal
    with pytest.raises(LeaseHeld):
        company.claim(task.id, actor="planner2", run_id="r2")
    assert renewed.expires_at > lease.expires_at
    with pytest.raises(StaleFencingToken):
        company.release(task.id, actor="planner2", fencing_token=lease.fencing_token)
    company.release(task.id, actor="planner", fencing_token=lease.fencing_token)
    assert company.leases() == []
    with pytest.raises(StaleFencingToken):
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC},
                           fencing_token=lease.fencing_token)
    assert company.claim(task.id, actor="planner2", run_id="r2").fencing_token == 2


def test_lease_length_is_bounded(leased):
    company, task = leased
    for ttl in (0, -1, 3601):
        with pytest.raises(UsageError):
            company.claim(task.id, actor="planner", run_id="r", ttl=ttl)


def test_pausing_an_agent_releases_its_leases_at_once(leased):
    company, task = leased
    lease = company.claim(task.id, actor="planner", run_id="r1", ttl=600)
    company.set_status("planner", "paused", actor="alice")
    assert company.leases() == []
    release = company.audit_log(action="lease.release")[-1]
    assert (release.principal, release.data["holder"], release.data["reason"]) == ("alice", "planner",
                                                                                   "principal paused")
    assert company.claim(task.id, actor="planner2", run_id="r2").fencing_token == lease.fencing_token + 1


def test_pausing_a_portfolio_releases_agents_leases_in_it(leased):
    company, task = leased
    company.claim(task.id, actor="planner", run_id="r1", ttl=600)
    company.pause("default/default", actor="alice")
    assert company.leases() == []
    assert company.audit_log(action="lease.release")[-1].data["reason"] == "scope default/default paused"


HOLDER = """
import json, sys, time
from pathlib import Path
from roster.store import Store
store = Store.open(sys.argv[1], artifact_root=Path(sys.argv[2]))
company = store.company("acme")
lease = company.claim(1, actor="planner", run_id=sys.argv[3], ttl=float(sys.argv[4]))
print(json.dumps({"token": lease.fencing_token}), flush=True)
if sys.argv[5] == "hang":
    time.sleep(600)
sys.stdin.readline()  # stalled (a GC pause, a lost network) until the parent says go on
try:
    company.transition(1, "plan", actor="planner", expected_version=1,
                       writes={"spec": "Written by a runner that lost its lease."}, fencing_token=lease.fencing_token)
    print("wrote", flush=True)
except Exception as exc:
    print(type(exc).__name__, flush=True)
"""


def _start_holder(db_path: Path, tmp_path: Path, run_id: str, ttl: float, mode: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, f"sqlite:///{db_path}", str(tmp_path / "a"), run_id,
                             str(ttl), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())["token"]


@pytest.fixture
def real_store(db_path, tmp_path):
    store = Store.open(f"sqlite:///{db_path}", artifact_root=tmp_path / "a")
    store.apply(parse_spec(TWO_PLANNERS), applied_by="alice")
    company = store.company("acme")
    company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    yield company
    store.close()


def test_a_runner_killed_with_sigkill_leaves_no_lock_behind(real_store, db_path, tmp_path):
    proc, token = _start_holder(db_path, tmp_path, "doomed", ttl=1.0, mode="hang")
    try:
        with pytest.raises(LeaseHeld):
            real_store.claim(1, actor="planner2", run_id="next", ttl=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    time.sleep(1.2)  # the dead runner's lease runs out; nobody runs any SQL by hand
    lease = real_store.claim(1, actor="planner2", run_id="next", ttl=30)
    assert lease.fencing_token == token + 1
    task = real_store.transition(1, "plan", actor="planner2", expected_version=1, writes={"spec": GOOD_SPEC},
                                 fencing_token=lease.fencing_token)
    assert task.state == "planned" and task.version == 2
    assert real_store.verify_audit()[1] is None


def test_a_stalled_runner_that_wakes_up_after_losing_its_lease_cannot_write(real_store, db_path, tmp_path):
    proc, token = _start_holder(db_path, tmp_path, "stalled", ttl=1.0, mode="stall")
    try:
        time.sleep(1.2)
        lease = real_store.claim(1, actor="planner2", run_id="next", ttl=30)
        real_store.transition(1, "plan", actor="planner2", expected_version=1, writes={"spec": GOOD_SPEC},
                              fencing_token=lease.fencing_token)
        out, _ = proc.communicate("go on\n", timeout=30)
    finally:
        proc.kill()
    assert out.strip() == "StaleFencingToken"
    task = real_store.get_task(1)
    assert (task.fields["spec"], task.version) == (GOOD_SPEC, 2)
    rejected = real_store.audit_log(action="task.transition.rejected")[-1]
    assert rejected.data["error"]["presented"] == token and rejected.data["error"]["current"] == token + 1
    assert real_store.verify_audit()[1] is None


def test_only_who_could_move_a_task_may_claim_it(leased):
    """A lease keeps everyone else off the task: an agent that may take no transition out of its state
    (here the builder, on a task in 'found') is refused, audited, and the task stays free for the planner."""
    company, task = leased
    with pytest.raises(Denied) as refused:
        company.claim(task.id, actor="builder", run_id="r-builder", ttl=3600)
    assert "may take no transition out of that state" in refused.value.message
    assert company.audit_log(action="lease.claim.rejected")[-1].principal == "builder"
    assert company.get_task(task.id).lease_holder is None
    assert company.claim(task.id, actor="planner", run_id="r1", ttl=30).holder == "planner"
