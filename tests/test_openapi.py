"""The published API contract: docs/openapi.json matches the code, and a schemathesis run over it finds
no server error and no response that breaks the documented schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from conftest import FIX_LINT
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from roster.api import create_app
from roster.api.openapi import render
from roster.specfile import parse_spec
from roster.store import Store

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]
"""No 5xx, and every response as documented (status, media type, schema, headers). Business refusals of
schema-valid input (a release of a task you do not hold: 400) are documented outcomes, not failures, so
schemathesis's positive-data-acceptance check is not among them."""

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def test_the_checked_in_openapi_document_matches_the_code():
    assert DOC.read_text() == render(), (
        "docs/openapi.json is out of date: regenerate it with `python -m roster.api.openapi > docs/openapi.json`")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store = Store.open(f"sqlite:///{root / 'fuzz.db'}", artifact_root=root / "artifacts")
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    company = store.company("acme")
    for i in range(3):
        company.create_task(workflow="fix-lint", title=f"task {i}", actor="alice", fields={"rule": "E501"})
    token = company.issue_token("alice", actor="alice").token
    return create_app(store), token


def test_no_request_gets_a_server_error_or_an_undocumented_response(served):
    """Every operation, with generated parameters and bodies (25 examples each), authenticated as a
    human: no 5xx, and every response conforms to the documented schema (schemathesis checks)."""
    app, token = served
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def check(case) -> None:  # noqa: ANN001
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            try:
                case.call_and_validate(checks=CHECKS)
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
                failures.append(f"{operation.label}: {str(exc)[:400]}")
                raise

        try:
            check()
        except Exception:  # noqa: BLE001 - recorded above
            continue
    assert operations >= 20
    assert failures == [], "\n".join(sorted(set(f[:300] for f in failures)))
