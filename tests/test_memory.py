"""Memory pads: typed entries with provenance, private pads and explicit shares, team pads from the spec,
full-text recall ranked by relevance and confidence, expiry, forgetting, consolidation, export and import."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import FIX_LINT

from roster.errors import Denied, NotFound, PayloadTooLarge, UsageError
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.memory import EXPORT_FORMAT, MAX_ENTRY_CHARS, MEMORY_KINDS

# The default portfolio's team pad: qa reads it; planner and the role 'coders' (builder) write it.
# The 'ops' portfolio names nobody, so only humans use its pad.
TEAM = """\
workspaces:
  default:
    portfolios:
      default:
        team_memory: {read: [qa], write: [planner, coders]}
      ops: {}
"""
MEMORY_SPEC = FIX_LINT.replace("company: acme\n", "company: acme\n" + TEAM).replace(
    "builder: {reports_to: alice, tier: bounded-mutator}",
    "builder: {reports_to: alice, tier: bounded-mutator, roles: [coders]}")
TEAM_PAD = "team:default/default"
OPS_PAD = "team:default/ops"

# Unrelated entries, so that the words searched for are rare in a pad and FTS5's bm25 gives them weight.
FILLER = [
    "The deploy window is Tuesday afternoon.",
    "Alice prefers short pull request descriptions.",
    "Docs live in the docs folder at the repository root.",
    "Run the integration suite before tagging a release.",
    "Type hints are required on public functions.",
    "The changelog follows keep-a-changelog.",
]


@pytest.fixture
def mem(databases, tmp_path, clock):
    """Company 'acme' with team memory in a store driven by the manual ``clock``."""
    opened = Store.open(databases("memory"), clock=clock, artifact_root=tmp_path / "artifacts")
    opened.apply(parse_spec(MEMORY_SPEC), applied_by="alice")
    yield opened.company("acme")
    opened.close()


def _ids(entries) -> list[int]:
    return [e.id for e in entries]


def _events(company, action: str):
    return company.audit_log(action=action)


def _fill(company, pad: str = "planner") -> None:
    for line in FILLER:
        company.remember(line, actor="alice", pad=pad, kind="belief", confidence=0.5)


# -- remember and list -------------------------------------------------------------------------------


def test_an_agents_entry_goes_to_its_own_pad_with_kind_confidence_and_provenance(mem, clock):
    entry = mem.remember("Ruff's E501 fixes are safe to batch.", actor="planner", kind="lesson", confidence=0.7,
                         provenance={"run": 12, "task": 3})
    assert (entry.pad, entry.kind, entry.confidence, entry.provenance, entry.created_by) == (
        "planner", "lesson", 0.7, {"run": 12, "task": 3}, "planner")
    assert entry.expires_at is None and entry.score is None
    assert entry.created_at == "2026-01-01T00:00:00.000000Z"
    listed = mem.list_memory(actor="planner")
    assert listed == [entry]
    assert mem.list_memory(actor="planner", pads=["planner"]) == [entry]
    # nobody else's pad received it
    assert mem.list_memory(actor="builder") == []
    assert mem.list_memory(actor="alice", pads=["builder", "alice", TEAM_PAD]) == []
    # the audit records the entry but not its text
    added = _events(mem, "memory.add")[-1]
    assert (added.principal, added.subject, added.data["id"], added.data["kind"]) == (
        "planner", "memory:planner", entry.id, "lesson")
    assert "E501" not in json.dumps(added.data)


def test_list_is_newest_first_filters_by_kind_and_honours_the_limit(mem):
    first = mem.remember("one", actor="builder", kind="belief")
    second = mem.remember("two", actor="builder", kind="decision")
    third = mem.remember("three", actor="builder", kind="belief")
    assert _ids(mem.list_memory(actor="builder")) == [third.id, second.id, first.id]
    assert _ids(mem.list_memory(actor="builder", kind="belief")) == [third.id, first.id]
    assert _ids(mem.list_memory(actor="builder", limit=2)) == [third.id, second.id]


def test_default_confidence_and_every_kind_is_accepted(mem):
    for kind in MEMORY_KINDS:
        assert mem.remember(f"a {kind}", actor="qa", kind=kind).kind == kind
    assert {e.kind for e in mem.list_memory(actor="qa")} == set(MEMORY_KINDS)
    assert mem.remember("bounds are inclusive", actor="qa", confidence=0).confidence == 0
    assert mem.remember("bounds are inclusive", actor="qa", confidence=1).confidence == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"text_": "fine", "kind": "rumor"}, "kind 'rumor'"),
    ({"text_": "fine", "confidence": 1.5}, "confidence"),
    ({"text_": "fine", "confidence": -0.1}, "confidence"),
    ({"text_": "fine", "confidence": float("nan")}, "confidence"),
    ({"text_": ""}, "needs some text"),
    ({"text_": "  \n\t "}, "needs some text"),
    ({"text_": "fine", "expires_in": 0}, "expires_in"),
])
def test_remember_refuses_bad_entries(mem, kwargs, match):
    with pytest.raises(UsageError, match=match):
        mem.remember(actor="planner", **kwargs)
    assert mem.list_memory(actor="planner") == []
    assert _events(mem, "memory.add") == []


def test_remember_refuses_text_over_the_limit(mem):
    with pytest.raises(PayloadTooLarge) as too_large:
        mem.remember("x" * (MAX_ENTRY_CHARS + 1), actor="planner")
    assert (too_large.value.size, too_large.value.limit) == (MAX_ENTRY_CHARS + 1, MAX_ENTRY_CHARS)
    assert mem.list_memory(actor="planner") == []
    # exactly the limit is fine
    assert len(mem.remember("x" * MAX_ENTRY_CHARS, actor="planner").text) == MAX_ENTRY_CHARS


# -- privacy and shares ------------------------------------------------------------------------------


def test_an_agent_cannot_read_another_agents_pad_and_the_refusal_is_audited(mem):
    secret = mem.remember("the release key is rotated on Mondays", actor="planner", kind="belief")
    before = len(_events(mem, "memory.read.rejected"))
    with pytest.raises(Denied, match="private"):
        mem.list_memory(actor="builder", pads=["planner"])
    with pytest.raises(Denied):
        mem.recall("release key", actor="builder", pads=["planner"])
    with pytest.raises(Denied):  # asking for its own pad too does not smuggle the other one in
        mem.recall("release key", actor="builder", pads=["builder", "planner"])
    rejected = _events(mem, "memory.read.rejected")
    assert len(rejected) == before + 3  # one audit event per refusal
    assert all(e.principal == "builder" and e.subject == "memory:planner" for e in rejected[before:])
    assert rejected[-1].data["error"]["error"] == "denied"
    assert "release key" not in json.dumps([e.data for e in rejected])
    # the owner still sees it
    assert _ids(mem.recall("release key", actor="planner")) == [secret.id]


def test_share_lets_an_agent_read_a_pad_until_revoked(mem):
    entry = mem.remember("merge conflicts come from the lockfile", actor="planner", kind="lesson")
    mem.share_memory("planner", "builder", actor="planner")
    assert mem.memory_shares("planner") == ["builder"]
    assert _ids(mem.list_memory(actor="builder", pads=["planner"])) == [entry.id]
    assert _ids(mem.recall("lockfile", actor="builder", pads=["planner"])) == [entry.id]
    # only builder was granted
    with pytest.raises(Denied):
        mem.list_memory(actor="qa", pads=["planner"])
    shared = _events(mem, "memory.share")[-1]
    assert (shared.principal, shared.subject, shared.data) == ("planner", "memory:planner", {"grantee": "builder"})

    mem.share_memory("planner", "builder", actor="planner", revoke=True)
    assert mem.memory_shares("planner") == []
    with pytest.raises(Denied):
        mem.list_memory(actor="builder", pads=["planner"])
    with pytest.raises(Denied):
        mem.recall("lockfile", actor="builder", pads=["planner"])
    assert _events(mem, "memory.unshare")[-1].data == {"grantee": "builder"}


def test_sharing_twice_is_one_grant_and_only_the_owner_or_a_human_may_share(mem):
    mem.share_memory("planner", "builder", actor="planner")
    mem.share_memory("planner", "builder", actor="planner")
    assert mem.memory_shares("planner") == ["builder"]
    with pytest.raises(Denied):  # a reader is not an owner: it cannot pass the pad on
        mem.share_memory("planner", "qa", actor="builder")
    assert _events(mem, "memory.share.rejected")[-1].principal == "builder"
    mem.share_memory("planner", "qa", actor="alice")
    assert mem.memory_shares("planner") == ["builder", "qa"]
    with pytest.raises(NotFound):
        mem.share_memory("planner", "nobody", actor="planner")
    with pytest.raises(UsageError, match="team pad"):
        mem.share_memory(TEAM_PAD, "merger", actor="alice")
    assert mem.memory_shares("planner") == ["builder", "qa"]


def test_an_agent_never_writes_another_agents_pad_even_when_shared(mem):
    entry = mem.remember("keep branches short", actor="planner", kind="preference")
    mem.share_memory("planner", "builder", actor="planner")
    with pytest.raises(Denied, match="write"):
        mem.remember("planner is wrong", actor="builder", pad="planner")
    with pytest.raises(Denied):
        mem.forget(entry.id, actor="builder")
    with pytest.raises(Denied):
        mem.consolidate_memory(actor="builder", pads=["planner"])
    assert _ids(mem.list_memory(actor="planner")) == [entry.id]
    assert _events(mem, "memory.add.rejected")[-1].subject == "memory:planner"
    assert _events(mem, "memory.forget.rejected")[-1].principal == "builder"


def test_a_human_reads_and_writes_any_pad(mem):
    entry = mem.remember("tests are slow on CI", actor="planner")
    assert _ids(mem.list_memory(actor="alice", pads=["planner"])) == [entry.id]
    assert _ids(mem.recall("slow tests", actor="bob", pads=["planner"])) == [entry.id]
    note = mem.remember("prefer small diffs", actor="alice", pad="planner", kind="preference")
    assert note.created_by == "alice" and note.pad == "planner"
    assert _ids(mem.list_memory(actor="planner")) == [note.id, entry.id]
    mem.forget(entry.id, actor="bob")
    assert _ids(mem.list_memory(actor="planner")) == [note.id]


def test_pads_of_unknown_principals_do_not_exist(mem):
    with pytest.raises(NotFound):
        mem.list_memory(actor="alice", pads=["nobody"])
    with pytest.raises(NotFound):
        mem.remember("hello", actor="alice", pad="nobody")


# -- team pads ---------------------------------------------------------------------------------------


def test_team_pad_access_follows_the_specs_team_memory(mem):
    by_planner = mem.remember("we squash merges", actor="planner", pad=TEAM_PAD, kind="decision")
    by_builder = mem.remember("CI caches the venv", actor="builder", pad=TEAM_PAD)  # by role 'coders'
    assert by_builder.pad == TEAM_PAD and by_builder.created_by == "builder"
    expected = [by_builder.id, by_planner.id]
    for reader in ("planner", "builder", "qa", "alice"):  # writers read too
        assert _ids(mem.list_memory(actor=reader, pads=[TEAM_PAD])) == expected, reader
    assert _ids(mem.recall("squash", actor="qa", pads=[TEAM_PAD])) == [by_planner.id]
    # qa may only read
    with pytest.raises(Denied, match="team_memory.write"):
        mem.remember("qa was here", actor="qa", pad=TEAM_PAD)
    with pytest.raises(Denied):
        mem.forget(by_planner.id, actor="qa")
    # merger is named in neither list
    with pytest.raises(Denied, match="team_memory.read"):
        mem.list_memory(actor="merger", pads=[TEAM_PAD])
    with pytest.raises(Denied):
        mem.remember("merger was here", actor="merger", pad=TEAM_PAD)
    assert _events(mem, "memory.read.rejected")[-1].principal == "merger"
    # a human writes and reads it
    assert mem.remember("humans may", actor="alice", pad=TEAM_PAD).pad == TEAM_PAD
    assert len(mem.list_memory(actor="qa", pads=[TEAM_PAD])) == 3


def test_a_portfolio_without_team_memory_grants_is_for_humans_only(mem):
    with pytest.raises(Denied):
        mem.remember("x", actor="planner", pad=OPS_PAD)
    with pytest.raises(Denied):
        mem.list_memory(actor="planner", pads=[OPS_PAD])
    entry = mem.remember("ops note", actor="bob", pad=OPS_PAD)
    assert _ids(mem.list_memory(actor="alice", pads=[OPS_PAD])) == [entry.id]


@pytest.mark.parametrize("pad", ["team:default/nope", "team:nowhere/default", "team:default", "team:"])
def test_an_unknown_portfolio_has_no_team_pad(mem, pad):
    with pytest.raises(NotFound):
        mem.list_memory(actor="alice", pads=[pad])
    with pytest.raises(NotFound):
        mem.remember("x", actor="planner", pad=pad)
    assert mem.list_memory(actor="alice", pads=[TEAM_PAD]) == []


# -- recall ------------------------------------------------------------------------------------------


def test_recall_matches_stemmed_words(mem):
    _fill(mem)
    conflicts = mem.remember("Merge conflicts come from the generated lockfile.", actor="planner", kind="lesson")
    for query in ("merging", "merged", "conflicting", "LOCKFILE", "lockfiles"):
        hits = mem.recall(query, actor="planner")
        assert _ids(hits) == [conflicts.id], query
        assert hits[0].score is not None and hits[0].score > 0
    assert mem.recall("kubernetes", actor="planner") == []


def test_recall_ranks_more_matching_words_first(mem):
    _fill(mem)
    one_word = mem.remember("Merge the feature branch every day.", actor="planner")
    two_words = mem.remember("Merge conflicts come back every day.", actor="planner")
    other = mem.remember("Conflicts in the schedule go to Alice.", actor="planner")
    hits = mem.recall("merge conflicts", actor="planner")
    assert hits[0].id == two_words.id
    assert set(_ids(hits)) == {one_word.id, two_words.id, other.id}
    scores = [h.score for h in hits]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[1]


def test_recall_weights_relevance_by_confidence(mem):
    _fill(mem)
    unsure = mem.remember("The flaky test is test_upload.", actor="planner", confidence=0.2)
    sure = mem.remember("The flaky test is test_upload.", actor="planner", confidence=0.9)
    middling = mem.remember("The flaky test is test_upload.", actor="planner", confidence=0.5)
    hits = mem.recall("flaky upload", actor="planner")
    assert _ids(hits) == [sure.id, middling.id, unsure.id]
    assert hits[0].score > hits[1].score > hits[2].score > 0
    # same text relevance: the score is relevance * (0.5 + 0.5 * confidence)
    relevance = hits[0].score / (0.5 + 0.5 * 0.9)
    assert hits[2].score == pytest.approx(relevance * (0.5 + 0.5 * 0.2), rel=1e-4)


def test_recall_honours_limit_kinds_and_pads(mem):
    _fill(mem)
    lesson = mem.remember("ruff fixes imports", actor="planner", kind="lesson")
    decision = mem.remember("ruff is pinned", actor="planner", kind="decision")
    team = mem.remember("ruff runs in CI", actor="planner", pad=TEAM_PAD)
    assert set(_ids(mem.recall("ruff", actor="planner"))) == {lesson.id, decision.id}
    assert _ids(mem.recall("ruff", actor="planner", kinds=["decision"])) == [decision.id]
    assert set(_ids(mem.recall("ruff", actor="planner", pads=["planner", TEAM_PAD]))) == {
        lesson.id, decision.id, team.id}
    assert len(mem.recall("ruff", actor="planner", limit=1)) == 1


def test_recall_with_no_words_lists_the_newest(mem):
    first = mem.remember("first", actor="planner")
    second = mem.remember("second", actor="planner")
    assert _ids(mem.recall("", actor="planner")) == [second.id, first.id]
    assert _ids(mem.recall(" ?! ", actor="planner")) == [second.id, first.id]
    assert _ids(mem.recall('"', actor="planner")) == [second.id, first.id]


@pytest.mark.parametrize("query", ['foo" OR bar(', 'NEAR(foo bar)', "foo AND NOT", "foo*", "bar^ : -foo",
                                   "'; DROP TABLE memory_entries; --"])
def test_recall_survives_punctuation_and_fts_syntax(mem, query):
    _fill(mem)
    foo = mem.remember("foo is the old name of the service", actor="planner")
    bar = mem.remember("bar replaced it last spring", actor="planner")
    hits = mem.recall(query, actor="planner")
    assert set(_ids(hits)) <= {foo.id, bar.id}
    if "foo" in query:
        assert foo.id in _ids(hits)
    # the tables are intact
    assert len(mem.list_memory(actor="planner")) == len(FILLER) + 2


def test_expired_entries_are_not_returned(mem, clock):
    _fill(mem)
    lasting = mem.remember("the staging server moved to eu-west", actor="planner")
    brief = mem.remember("the staging server is down", actor="planner", expires_in=60)
    assert brief.expires_at == "2026-01-01T00:01:00.000000Z"
    clock.advance(59)
    assert brief.id in _ids(mem.list_memory(actor="planner"))
    assert set(_ids(mem.recall("staging server", actor="planner"))) == {lasting.id, brief.id}
    clock.advance(2)
    assert brief.id not in _ids(mem.list_memory(actor="planner"))
    assert _ids(mem.recall("staging server", actor="planner")) == [lasting.id]
    assert mem.recall("down", actor="planner") == []
    assert brief.id not in _ids(mem.list_memory(actor="alice", pads=["planner"]))


# -- forget ------------------------------------------------------------------------------------------


def test_forget_removes_the_entry_and_the_audit_keeps_no_text(mem):
    _fill(mem)
    keep = mem.remember("the tokens live in vault", actor="planner")
    gone = mem.remember("the password is hunter2", actor="planner", kind="belief")
    assert gone.id in _ids(mem.recall("hunter2", actor="planner"))
    forgotten = mem.forget(gone.id, actor="planner", reason="a secret")
    assert forgotten == gone
    assert gone.id not in _ids(mem.list_memory(actor="planner"))
    assert mem.recall("hunter2 password", actor="planner") == []
    assert _ids(mem.recall("vault", actor="planner")) == [keep.id]
    event = _events(mem, "memory.forget")[-1]
    assert (event.principal, event.subject, event.data["id"], event.data["kind"], event.data["reason"]) == (
        "planner", "memory:planner", gone.id, "belief", "a secret")
    assert "hunter2" not in json.dumps(event.data)
    assert all("hunter2" not in json.dumps(e.data) for e in mem.audit_log())
    with pytest.raises(NotFound):
        mem.forget(gone.id, actor="planner")


# -- consolidation -----------------------------------------------------------------------------------


def test_consolidate_merges_duplicates_drops_expired_and_audits_each_decision(mem, clock):
    low = mem.remember("Use ruff.", actor="planner", kind="decision", confidence=0.6, provenance={"run": 1})
    high = mem.remember("use RUFF", actor="planner", kind="decision", confidence=0.9, provenance={"run": 2})
    other_kind = mem.remember("use ruff", actor="planner", kind="lesson", confidence=0.5)
    other_pad = mem.remember("Use ruff!", actor="builder", kind="decision", confidence=0.4)
    brief = mem.remember("the runner is paused", actor="planner", expires_in=10)
    clock.advance(11)

    result = mem.consolidate_memory(actor="planner", pads=["planner"])
    assert result.merged == [(high.id, [low.id])]
    assert result.expired == [brief.id]

    kept = {e.id: e for e in mem.list_memory(actor="planner")}
    assert set(kept) == {high.id, other_kind.id}
    assert kept[high.id].provenance == {"run": 2, "merged": [
        {"id": low.id, "provenance": {"run": 1}, "created_by": "planner"}]}
    assert kept[high.id].confidence == 0.9 and kept[high.id].text == "use RUFF"
    assert set(_ids(mem.recall("ruff", actor="planner"))) == {high.id, other_kind.id}
    assert _ids(mem.list_memory(actor="builder")) == [other_pad.id]  # not in the pads consolidated

    merge = _events(mem, "memory.merge")
    assert [(e.principal, e.subject, e.data["kept"], e.data["dropped"]) for e in merge] == [
        ("planner", "memory:planner", high.id, [low.id])]
    expire = _events(mem, "memory.expire")
    assert [(e.subject, e.data["id"]) for e in expire] == [("memory:planner", brief.id)]

    again = mem.consolidate_memory(actor="planner", pads=["planner"])
    assert (again.merged, again.expired) == ([], [])
    assert len(_events(mem, "memory.merge")) == 1 and len(_events(mem, "memory.expire")) == 1
    assert set(_ids(mem.list_memory(actor="planner"))) == {high.id, other_kind.id}


def test_consolidate_keeps_the_newest_on_a_tie_and_the_runtime_covers_every_pad(mem, clock):
    older = mem.remember("Pin the ruff version", actor="builder", kind="constraint", confidence=0.8)
    newer = mem.remember("pin the RUFF version.", actor="builder", kind="constraint", confidence=0.8)
    third = mem.remember("Pin the ruff   version", actor="builder", kind="constraint", confidence=0.3)
    team_a = mem.remember("squash merges", actor="planner", pad=TEAM_PAD, kind="decision", confidence=0.5)
    team_b = mem.remember("Squash merges.", actor="alice", pad=TEAM_PAD, kind="decision", confidence=0.7)
    result = mem.consolidate_memory(actor=None)
    assert sorted(result.merged) == sorted([(newer.id, [older.id, third.id]), (team_b.id, [team_a.id])])
    assert result.expired == []
    assert _ids(mem.list_memory(actor="builder")) == [newer.id]
    assert _ids(mem.list_memory(actor="alice", pads=[TEAM_PAD])) == [team_b.id]
    assert {e.principal for e in _events(mem, "memory.merge")} == {"runtime"}
    # an agent consolidating every pad needs write access to each: refused, and nothing changes
    mem.remember("Squash merges!", actor="planner", pad=TEAM_PAD, kind="decision")
    mem.remember("x", actor="qa")
    with pytest.raises(Denied):
        mem.consolidate_memory(actor="planner")
    assert len(mem.list_memory(actor="alice", pads=[TEAM_PAD])) == 2


# -- export and import -------------------------------------------------------------------------------


def _planner_export(mem) -> tuple[dict, list]:
    decision = mem.remember("Pin ruff to 0.6 until the upgrade lands.", actor="planner", kind="decision",
                            confidence=0.9, provenance={"task": 7})
    lesson = mem.remember("Flaky upload tests need a retry.", actor="planner", kind="lesson", confidence=0.6)
    mem.remember("Alice is on leave in March.", actor="planner", kind="belief")
    document = mem.export_memory("planner", actor="planner", kinds=["decision", "lesson"])
    return json.loads(json.dumps(document)), [decision, lesson]


def test_export_a_slice_and_import_it_into_another_pad_with_provenance(mem):
    document, (decision, lesson) = _planner_export(mem)
    assert (document["format"], document["company"], document["pad"], document["exported_by"]) == (
        EXPORT_FORMAT, "acme", "planner", "planner")
    assert [(e["kind"], e["text"], e["confidence"]) for e in document["entries"]] == [
        ("decision", decision.text, 0.9), ("lesson", lesson.text, 0.6)]
    assert document["entries"][0]["provenance"] == {"task": 7, "id": decision.id}
    exported = _events(mem, "memory.export")[-1]
    assert (exported.principal, exported.subject, exported.data["entries"]) == ("planner", "memory:planner", 2)

    imported = mem.import_memory("builder", document, actor="builder")
    assert [(e.pad, e.kind, e.text, e.confidence, e.created_by) for e in imported] == [
        ("builder", "decision", decision.text, 0.9, "builder"), ("builder", "lesson", lesson.text, 0.6, "builder")]
    for entry, original in zip(imported, (decision, lesson), strict=True):
        assert entry.provenance["received_from"] == "acme/planner"
        assert entry.provenance["exported_by"] == "planner"
        assert entry.provenance["original"]["id"] == original.id
    listed = mem.list_memory(actor="builder")
    assert sorted(_ids(listed)) == sorted(_ids(imported))
    assert all(e.provenance["received_from"] == "acme/planner" for e in listed)
    assert _ids(mem.recall("ruff", actor="builder")) == [imported[0].id]
    assert len(_events(mem, "memory.import")) == 2
    # the source pad is unchanged
    assert len(mem.list_memory(actor="planner")) == 3


def test_export_needs_read_access_and_import_needs_write_access(mem):
    document, _ = _planner_export(mem)
    with pytest.raises(Denied):
        mem.export_memory("planner", actor="builder")
    with pytest.raises(Denied):
        mem.import_memory("planner", document, actor="builder")
    with pytest.raises(Denied):
        mem.import_memory(TEAM_PAD, document, actor="qa")
    assert mem.list_memory(actor="alice", pads=[TEAM_PAD]) == []
    assert len(mem.import_memory(TEAM_PAD, document, actor="planner")) == 2


def _drop_entries(d):
    del d["entries"]


def _bad_format(d):
    d["format"] = "roster.memory/2"


def _bad_kind(d):
    d["entries"][1]["kind"] = "rumor"


def _bad_confidence(d):
    d["entries"][0]["confidence"] = 1.5


def _empty_text(d):
    d["entries"][1]["text"] = ""


def _long_text(d):
    d["entries"][1]["text"] = "x" * (MAX_ENTRY_CHARS + 1)


def _extra_key(d):
    d["signature"] = "trust me"


def _entries_not_a_list(d):
    d["entries"] = {"kind": "belief"}


@pytest.mark.parametrize("spoil", [_drop_entries, _bad_format, _bad_kind, _bad_confidence, _empty_text,
                                   _long_text, _extra_key, _entries_not_a_list])
def test_a_malformed_document_imports_nothing(mem, spoil):
    document, _ = _planner_export(mem)
    spoiled = copy.deepcopy(document)
    spoil(spoiled)
    with pytest.raises(UsageError, match=EXPORT_FORMAT):
        mem.import_memory("builder", spoiled, actor="builder")
    assert mem.list_memory(actor="builder") == []
    assert _events(mem, "memory.import") == []


@pytest.mark.parametrize("document", [None, "roster.memory/1", [], 42])
def test_a_document_that_is_not_an_object_imports_nothing(mem, document):
    with pytest.raises(UsageError):
        mem.import_memory("builder", document, actor="builder")
    assert mem.list_memory(actor="builder") == []


def test_memory_never_crosses_companies(mem):
    store = mem.store
    store.apply(parse_spec(MEMORY_SPEC.replace("company: acme", "company: globex")), applied_by="alice")
    globex = store.company("globex")
    globex.remember("globex ships on Fridays", actor="planner", kind="decision")
    foreign = globex.export_memory("planner", actor="planner")
    assert foreign["company"] == "globex"

    with pytest.raises(Denied, match="crosses companies"):
        mem.import_memory("builder", foreign, actor="builder")
    assert mem.list_memory(actor="builder") == []
    rejected = _events(mem, "memory.import.rejected")
    assert len(rejected) == 1
    assert (rejected[0].principal, rejected[0].subject, rejected[0].data["from_company"]) == (
        "builder", "memory:builder", "globex")
    # a hand-edited company name is refused the same way
    document, _ = _planner_export(mem)
    document["company"] = "otherco"
    with pytest.raises(Denied):
        mem.import_memory("builder", document, actor="builder")
    assert mem.list_memory(actor="builder") == []
    assert len(_events(mem, "memory.import.rejected")) == 2
    # and each company's pads hold only their own entries
    assert [e.text for e in globex.list_memory(actor="planner")] == ["globex ships on Fridays"]
    assert "globex" not in json.dumps([e.to_dict() for e in mem.list_memory(actor="planner")])
    assert globex.verify_audit()[1] is None


# -- the audit chain ---------------------------------------------------------------------------------


def test_the_audit_chain_verifies_after_every_memory_verb(mem, clock):
    _fill(mem)
    entry = mem.remember("the lockfile is generated", actor="planner", kind="lesson")
    mem.remember("use ruff", actor="planner", kind="decision", confidence=0.4)
    mem.remember("Use ruff.", actor="planner", kind="decision", confidence=0.8, expires_in=5)
    mem.remember("temporary", actor="planner", expires_in=5)
    mem.share_memory("planner", "builder", actor="planner")
    mem.recall("ruff", actor="builder", pads=["planner"])
    mem.share_memory("planner", "builder", actor="planner", revoke=True)
    with pytest.raises(Denied):
        mem.recall("ruff", actor="builder", pads=["planner"])
    with pytest.raises(Denied):
        mem.remember("no", actor="qa", pad=TEAM_PAD)
    document = mem.export_memory("planner", actor="alice", kinds=["decision"])
    mem.import_memory("builder", document, actor="builder")
    bad = dict(document, company="otherco")
    with pytest.raises(Denied):
        mem.import_memory("builder", bad, actor="builder")
    mem.consolidate_memory(actor="alice", pads=["planner"])
    mem.forget(entry.id, actor="planner")
    clock.advance(10)
    mem.consolidate_memory(actor=None)
    checked, problem = mem.verify_audit()
    assert problem is None
    assert checked == len(mem.audit_log())
    actions = {e.action for e in mem.audit_log()}
    assert {"memory.add", "memory.share", "memory.unshare", "memory.read.rejected", "memory.add.rejected",
            "memory.export", "memory.import", "memory.import.rejected", "memory.merge", "memory.expire",
            "memory.forget"} <= actions


def test_export_filters_by_kind_before_the_limit(company):
    company.remember("a lesson worth keeping", actor="planner", kind="lesson")
    for i in range(30):
        company.remember(f"belief number {i}", actor="planner", kind="belief")
    document = company.export_memory("planner", actor="planner", kinds=["lesson"], limit=10)
    assert [e["text"] for e in document["entries"]] == ["a lesson worth keeping"]


def test_entries_already_expired_are_not_imported(company):
    document = company.export_memory("planner", actor="planner")
    document["entries"] = [
        {"kind": "lesson", "text": "still true", "confidence": 0.9, "created_by": "planner",
         "created_at": "2026-01-01T00:00:00.000000Z"},
        {"kind": "lesson", "text": "long gone", "confidence": 0.9, "created_by": "planner",
         "created_at": "2025-01-01T00:00:00.000000Z", "expires_at": "2025-01-02T00:00:00.000000Z"}]
    imported = company.import_memory("builder", document, actor="builder")
    assert [e.text for e in imported] == ["still true"]
    assert [e.text for e in company.list_memory(actor="builder")] == ["still true"]
