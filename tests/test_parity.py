"""The same verbs on every interface (issue 14, item 2): the MCP tools' input schemas, as the official MCP
client receives them, offer every field of the runner's result models (so a field added to a result
model but not to its tool fails here), the REST bodies extend the same models, and docs/api.md's parity
table names only MCP tools and REST endpoints that exist."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from mcp import Client
from pydantic import BaseModel

from roster.api.mcp_server import create_mcp_server
from roster.api.openapi import document
from roster.runtime.runners import ArtifactOut, CheckOut, MemoryOut, MessageOut, RunResult, TaskOut

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"
TOOL_MODELS: dict[str, tuple[type[BaseModel], set[str]]] = {
    "save_artifact": (ArtifactOut, {"task_id", "fencing_token"}),
    "record_check": (CheckOut, {"task_id", "fencing_token"}),
    "file_task": (TaskOut, set()),
    "delegate": (TaskOut, {"parent_id"}),
    "message": (MessageOut, set()),
    "remember": (MemoryOut, set()),
}
"""Each tool whose input is a result model: the model, and the tool's own parameters besides its fields."""
REST_MODELS = {"CheckIn": CheckOut, "DelegationIn": TaskOut, "MessageIn": MessageOut}
VERBS = ("claim", "context", "transition", "save artifact", "read artifact content", "artifact versions",
         "artifact diff", "record check", "remember", "recall", "message", "reply", "inbox", "mark read",
         "delegate", "escalate", "request approval", "hold (humans)", "release (humans)", "approve / reject")


@pytest.fixture
def listed(store, company):
    """The tools the official MCP client lists for a human (who sees every tool), by name."""
    server = create_mcp_server(store, token=company.issue_token("alice", actor="alice").token)

    async def tools() -> dict:
        async with Client(server) as client:
            return {t.name: t for t in (await client.list_tools()).tools}

    return asyncio.run(tools())


def resolved(schema: dict, defs: dict) -> dict:
    """``schema`` with local ``$ref``s replaced by their definitions (the tool's and the model's $defs
    may be laid out differently; what they describe must be the same)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return resolved(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: resolved(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolved(v, defs) for v in schema]
    return schema


@pytest.mark.parametrize("tool", sorted(TOOL_MODELS))
def test_each_tool_offers_exactly_its_result_models_fields_with_the_same_schema(listed, tool):
    model, own = TOOL_MODELS[tool]
    received = listed[tool].input_schema
    wanted = model.model_json_schema()
    assert set(received["properties"]) == set(wanted["properties"]) | own, (
        f"the MCP tool '{tool}' and {model.__name__} offer different fields: generate the tool's signature "
        "from the model (roster.api.mcp_server.model_tool)")
    for field, schema in wanted["properties"].items():
        assert resolved(received["properties"][field], received.get("$defs", {})) == resolved(
            schema, wanted.get("$defs", {})), f"{tool}.{field} differs from {model.__name__}.{field}"
    assert set(wanted.get("required", [])) <= set(received.get("required", [])), tool


def test_a_field_added_to_a_result_model_is_offered_by_its_tool(store, company, monkeypatch):
    """The tools are generated from the models when the server is built: a new field shows at once."""
    from pydantic import Field

    class Wider(CheckOut):
        evidence_url: str = Field(default="", description="Where the check's output is kept.")

    monkeypatch.setattr("roster.api.mcp_server.CheckOut", Wider)
    server = create_mcp_server(store, token=company.issue_token("alice", actor="alice").token)

    async def schema() -> dict:
        async with Client(server) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}["record_check"]

    offered = asyncio.run(schema())["properties"]
    assert offered["evidence_url"]["description"] == "Where the check's output is kept."


def test_rest_bodies_extend_the_same_result_models():
    schemas = document()["components"]["schemas"]
    for name, model in REST_MODELS.items():
        properties = schemas[name]["properties"]
        missing = set(model.model_fields) - set(properties)
        assert not missing, f"REST body {name} lacks {model.__name__}'s {sorted(missing)}"


def parity_rows() -> dict[str, list[str]]:
    text = DOCS.read_text()
    table = text[text.index("| verb | program result |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_parity_table_names_only_tools_and_endpoints_that_exist(listed):
    rows = parity_rows()
    assert set(VERBS) <= set(rows), f"docs/api.md's parity table lacks {sorted(set(VERBS) - set(rows))}"
    paths = {(method.upper(), path.removeprefix("/api/v1").replace("{task_id}", "{id}").replace(
        "{request_id}", "{id}").replace("{thread_id}", "{id}"))
        for path, operations in document()["paths"].items() for method in operations}
    result_keys = set(RunResult.model_fields)
    for verb, (program, _llm, mcp, rest, _cli) in rows.items():
        for tool in set(re.findall(r"`([a-z_]+)`", mcp)) - {"thread_id"}:
            assert tool in listed, f"parity table, {verb}: no MCP tool '{tool}'"
        for method, path in re.findall(r"`(GET|POST|PUT|DELETE) ([^`?]+)", rest):
            assert (method, path) in paths, f"parity table, {verb}: no REST endpoint {method} {path}"
        for key in re.findall(r"`([a-z_]+)`", program):
            assert key in result_keys or key in ("packet", "thread_id"), f"parity table, {verb}: no result key {key}"
        if verb not in ("claim", "context"):
            assert mcp != "—" and rest != "—", f"parity table, {verb}: every verb exists over MCP and REST"
