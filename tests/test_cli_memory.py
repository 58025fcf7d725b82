"""The CLI of issue 5: `roster memory ...`, `roster msg ...` and `roster task delegate|children`, run
in-process against a real workspace from `roster init`, each as the principal of its token."""

from __future__ import annotations

import json

from conftest import js, ok

from roster.cli.context import operator_handle


def as_(cli, token: str, *args: str):  # noqa: ANN001, ANN201
    return cli("--token", token, *args)


def test_memory_add_list_search_forget_share_and_the_privacy_of_a_pad(cli):
    ok(cli("init"))
    planner = js(cli("token", "issue", "planner", "--json"))["token"]
    builder = js(cli("token", "issue", "builder", "--json"))["token"]
    added = js(as_(cli, planner, "memory", "add", "URLs are exempt from E501", "--kind", "constraint",
                   "--confidence", "0.9", "--json"))
    assert (added["pad"], added["kind"], added["confidence"]) == ("planner", "constraint", 0.9)
    js(as_(cli, planner, "memory", "add", "split imports one per line", "--kind", "lesson", "--json"))
    assert [e["text"] for e in js(as_(cli, planner, "memory", "list", "--json"))] == [
        "split imports one per line", "URLs are exempt from E501"]
    [hit] = js(as_(cli, planner, "memory", "search", "url", "--json"))
    assert hit["id"] == added["id"] and hit["score"] > 0
    refused = as_(cli, builder, "memory", "list", "--pad", "planner", "--json")
    assert refused.exit_code == 11  # private: denied
    ok(as_(cli, planner, "memory", "share", "planner", "builder"))
    assert len(js(as_(cli, builder, "memory", "list", "--pad", "planner", "--json"))) == 2
    ok(as_(cli, planner, "memory", "forget", str(added["id"]), "--reason", "superseded"))
    assert [e["text"] for e in js(as_(cli, planner, "memory", "list", "--json"))] == ["split imports one per line"]


def test_memory_export_import_and_consolidate(cli):
    ok(cli("init"))
    planner = js(cli("token", "issue", "planner", "--json"))["token"]
    builder = js(cli("token", "issue", "builder", "--json"))["token"]
    for text in ("use ruff", "Use RUFF.", "a belief"):
        js(as_(cli, planner, "memory", "add", text, "--kind", "lesson" if "ruff" in text.lower() else "belief",
               "--json"))
    merged = js(as_(cli, planner, "memory", "consolidate", "--pad", "planner", "--json"))
    assert len(merged["merged"]) == 1 and merged["expired"] == []
    out = cli.workspace / "lessons.json"
    ok(as_(cli, planner, "memory", "export", "planner", "--output", str(out), "--kind", "lesson"))
    assert [e["text"] for e in json.loads(out.read_text())["entries"]] in (["use ruff"], ["Use RUFF."])
    imported = js(as_(cli, builder, "memory", "import", "builder", str(out), "--json"))
    assert [e["provenance"]["received_from"] for e in imported] == ["example/planner"]
    (cli.workspace / "broken.json").write_text("{not json")
    assert as_(cli, builder, "memory", "import", "builder", str(cli.workspace / "broken.json")).exit_code == 2


def test_msg_send_inbox_thread_and_a_reply(cli):
    ok(cli("init"))
    planner = js(cli("token", "issue", "planner", "--json"))["token"]
    me = operator_handle()
    sent = js(as_(cli, planner, "msg", "send", me, "which rule first?", "--json"))
    [received] = js(cli("msg", "inbox", "--unread", "--json"))
    assert (received["id"], received["sender"]) == (sent["id"], "planner")
    js(cli("msg", "send", "planner", "E501 first", "--thread", str(sent["thread_id"]), "--json"))
    thread = js(cli("msg", "thread", str(sent["thread_id"]), "--json"))
    assert [(m["sender"], m["body"]) for m in thread] == [("planner", "which rule first?"), (me, "E501 first")]
    assert js(cli("msg", "inbox", "--unread", "--json")) == []  # reading the thread marked it read
    assert as_(cli, planner, "msg", "send", "builder", "psst").exit_code == 11  # no grant to message agents


def test_task_delegate_and_children(cli):
    ok(cli("init"))
    parent = js(cli("task", "create", "fix-lint", "--title", "E501 everywhere", "--set", "rule=E501", "--json"))
    child = js(cli("task", "delegate", str(parent["id"]), "fix-lint", "--title", "E501 in a.py",
                   "--subproblem", "a.py only", "--desired-output", "a patch", "--success", "ruff is clean",
                   "--set", "rule=E501", "--json"))
    assert child["parent_id"] == parent["id"] and child["packet"]["desired_output"] == "a patch"
    assert [t["id"] for t in js(cli("task", "children", str(parent["id"]), "--json"))] == [child["id"]]
    missing = cli("task", "delegate", str(parent["id"]), "fix-lint", "--title", "x", "--subproblem", "s",
                  "--desired-output", "d", "--set", "rule=E501")
    assert missing.exit_code == 2 and "success_condition" in missing.output
