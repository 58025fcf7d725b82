"""Issue 15's high finding: a read-only principal must not be able to lock everyone out of a task.

Claiming takes a task's lease (everyone else then gets 409 lease-held), so it needs the right to change
the task: an agent, a transition out of the task's state that names it and that its rights allow; a human,
``write`` on the workflow. Driven over REST with real tokens, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient
from sqlalchemy import select

from roster.api import create_app
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.schema import tasks

API = "/api/v1"

# watcher is named in plan's ``by`` but has the read-only tier (the default), so Cedar forbids its
# transitions: being named is not enough.
SPEC = """\
company: acme
workflows:
  fix-lint:
    states: [found, planned, done]
    initial: found
    fields:
      rule: {type: string}
    transitions:
      plan: {from: found, to: planned, by: [planner, watcher]}
      finish: {from: planned, to: done, by: [planner]}
agents:
  planner: {reports_to: alice, tier: bounded-mutator}
  watcher: {reports_to: alice}
humans:
  alice: {display_name: Alice}
"""


@pytest.fixture
def acme(db_url, tmp_path):
    store = Store.open(db_url, clock=ManualClock(), artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store, store.company("acme")
    store.close()


@pytest.fixture
def rest(acme):
    store, company = acme
    tokens = {h: company.issue_token(h, actor="alice").token for h in ("alice", "planner", "watcher")}
    with TestClient(create_app(store)) as client:
        yield client, (lambda handle: {"Authorization": f"Bearer {tokens[handle]}"})


def lease_row(store: Store, task_id: int):
    with store.read() as conn:
        return conn.execute(select(tasks.c.lease_holder, tasks.c.fencing_token).where(
            tasks.c.company_id == "acme", tasks.c.id == task_id)).one()


def test_a_read_only_agent_cannot_claim_and_no_lease_is_taken(acme, rest):
    store, company = acme
    api, auth = rest
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]

    refused = api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 3600}, headers=auth("watcher"))

    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == "/problems/denied"
    assert tuple(lease_row(store, task.id)) == (None, 0)
    assert [e.principal for e in company.audit_log(action="lease.claim.rejected")] == ["watcher"]
    # and the others are not locked out: the planner claims and moves it
    claimed = api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 60}, headers=auth("planner"))
    assert claimed.status_code == 200, claimed.text
    lease = claimed.json()
    moved = api.post(f"{API}/tasks/{task.id}/transitions", headers=auth("planner"),
                     json={"transition": "plan", "expected_version": 1, "fencing_token": lease["fencing_token"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["state"] == "planned"


def test_an_agent_cannot_claim_a_task_in_a_state_it_cannot_move_out_of(acme, rest):
    store, company = acme
    api, auth = rest
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    company.transition(task.id, "plan", actor="planner", expected_version=1)

    # watcher is named by no transition out of 'planned' (and is read-only anyway)
    refused = api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 3600}, headers=auth("watcher"))
    assert refused.status_code == 403, refused.text
    assert lease_row(store, task.id).lease_holder is None
    assert api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 60},
                    headers=auth("planner")).status_code == 200


def test_an_admin_hold_still_works_and_keeps_agents_off(acme, rest):
    store, company = acme
    api, auth = rest
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]

    held = api.post(f"{API}/tasks/{task.id}/hold", json={"seconds": 600, "note": "checking"}, headers=auth("alice"))
    assert held.status_code == 200, held.text
    assert lease_row(store, task.id).lease_holder == "alice"
    blocked = api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 60}, headers=auth("planner"))
    assert blocked.status_code == 409 and blocked.json()["type"] == "/problems/lease-held"
    # a human may also claim directly (write on the workflow), as before
    assert api.post(f"{API}/tasks/{task.id}/release", json={"note": "done"}, headers=auth("alice")).status_code == 204
    assert api.post(f"{API}/tasks/{task.id}/claim", json={"seconds": 60}, headers=auth("alice")).status_code == 200


def test_the_in_process_verb_applies_the_same_rule(acme):
    from roster.errors import Denied

    store, company = acme
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    with pytest.raises(Denied, match="may take no transition"):
        company.claim(task.id, actor="watcher", run_id="r", ttl=3600)
    assert lease_row(store, task.id).lease_holder is None
