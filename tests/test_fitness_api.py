"""Fitness and autonomy stages over REST (issue 17), on SQLite and PostgreSQL, through the real app: the
figures as the store computes them, refused to an agent without company read; stages read by anyone and
set by a human with admin (audited), with problem details for a bad window, an unknown stage or agent,
and an agent setting its own stage."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_api import check_problem_shape, problem
from test_fitness import LANE, Scripted, build, drain

from roster.api import create_app
from roster.runtime.dispatcher import Dispatcher

API = "/api/v1"


@pytest.fixture
def served(opened, clock, tmp_path):
    """The LANE company with some settled work, and a client of the real app, with tokens by handle."""
    acme = opened(LANE)
    for i in range(4):
        acme.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(2 * 3600)
    client = TestClient(create_app(acme.store, workdir=tmp_path))
    client.event_hooks = {"request": [], "response": [check_problem_shape]}
    tokens = {h: acme.issue_token(h, actor="alice").token for h in ("alice", "b1")}
    with client:
        yield acme, client, lambda handle: {"Authorization": f"Bearer {tokens[handle]}"}


def test_get_fitness_is_the_store_figures_and_refuses_an_agent_without_company_read(served):
    acme, api, auth = served
    got = api.get(f"{API}/fitness", params={"window": "30d"}, headers=auth("alice"))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body == acme.fitness(window_seconds=30 * 86400)
    [b1] = body["agents"]
    assert (b1["agent"], b1["successes"], b1["evidence"], b1["success_rate"]) == ("b1", 4, 4, 1.0)
    assert b1["workflows"][0]["transitions"] == [{"transition": "build", "outcomes": 4, "successes": 4,
                                                  "reputation": b1["workflows"][0]["transitions"][0]["reputation"]}]
    one = api.get(f"{API}/fitness", params={"agent": "qa"}, headers=auth("alice")).json()
    assert one["agents"] == []
    problem(api.get(f"{API}/fitness", headers=auth("b1")), 403, "denied")
    problem(api.get(f"{API}/fitness", params={"window": "a week"}, headers=auth("alice")), 400, "usage")
    problem(api.get(f"{API}/fitness"), 401, "unauthenticated")


def test_stages_are_read_by_anyone_and_set_by_a_human_with_admin(served):
    acme, api, auth = served
    listed = api.get(f"{API}/stages", params={"agent": "b2"}, headers=auth("b1"))
    assert listed.status_code == 200 and listed.json()[0]["stage"] == "bounded"
    moved = api.put(f"{API}/agents/b2/stage", json={"stage": "shadow", "workflow": "fix", "reason": "trial"},
                    headers=auth("alice"))
    assert moved.status_code == 200, moved.text
    assert (moved.json()["stage"], moved.json()["source"], moved.json()["set_by"]) == ("shadow", "human", "alice")
    [event] = acme.audit_log(action="stage.set")
    assert event.principal == "alice" and event.data["to"] == "shadow"
    problem(api.put(f"{API}/agents/b1/stage", json={"stage": "autonomous", "reason": "me"}, headers=auth("b1")),
            403, "denied")
    problem(api.put(f"{API}/agents/b2/stage", json={"stage": "boss", "reason": "x"}, headers=auth("alice")),
            422, "validation")
    problem(api.put(f"{API}/agents/ghost/stage", json={"stage": "assist", "reason": "x"}, headers=auth("alice")),
            404, "not-found")
    problem(api.put(f"{API}/agents/b2/stage", json={"stage": "assist", "workflow": "nope", "reason": "x"},
                    headers=auth("alice")), 404, "not-found")
    assert acme.stages(agent="b2")[0]["stage"] == "shadow"  # the refused ones changed nothing
