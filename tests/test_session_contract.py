"""The Session is a typed interface over the company's verbs, and the only one interfaces hold.

Each verb of ``Session.VERBS`` is a method written out on :class:`Session` whose signature is the
:class:`CompanyStore` verb's without ``actor``: the same parameters in the same order, of the same kind
(positional or keyword-only), with the same defaults and annotations, and the same return annotation. A
verb whose parameters change in the store fails here until its Session method follows. And a Session
gives no way to the unscoped :class:`CompanyStore` but ``company_for``, which takes a decision first.
"""

from __future__ import annotations

import inspect

import pytest

from roster.store.company import CompanyStore, Session


def _without_actor(signature: inspect.Signature) -> list[inspect.Parameter]:
    return [p for name, p in signature.parameters.items() if name not in ("self", "actor")]


def _described(parameters: list[inspect.Parameter]) -> list[tuple]:
    return [(p.name, p.kind, p.default, p.annotation) for p in parameters]


@pytest.mark.parametrize("verb", Session.VERBS)
def test_each_verb_is_a_method_of_its_own_with_the_store_verbs_signature_less_actor(verb):
    assert verb in vars(Session), f"Session.{verb} is not written out on Session"
    method = vars(Session)[verb]
    assert inspect.isfunction(method), f"Session.{verb} is not a plain method"
    store_verb = inspect.signature(getattr(CompanyStore, verb))
    assert "actor" in store_verb.parameters, f"CompanyStore.{verb} takes no actor: not a Session verb"
    mine = inspect.signature(method)
    assert "actor" not in mine.parameters, f"Session.{verb} must not take an actor"
    assert list(mine.parameters)[0] == "self"
    assert _described(_without_actor(mine)) == _described(_without_actor(store_verb)), verb
    assert mine.return_annotation == store_verb.return_annotation, verb
    assert method.__doc__ and f"CompanyStore.{verb}" in method.__doc__, f"Session.{verb} names its store verb"


def test_the_verbs_are_listed_once_and_the_session_has_no_proxy():
    assert len(Session.VERBS) == len(set(Session.VERBS))
    assert "__getattr__" not in vars(Session), "a Session is typed methods, not a proxy over the company"
    assert "__getattribute__" not in vars(Session)


def test_a_session_gives_no_company_but_through_company_for(company, store):
    session = store.session(company.issue_token("planner", actor="alice").token)
    assert not hasattr(session, "company")
    for name in dir(session):
        if name.startswith("_"):
            continue
        value = getattr(session, name)
        assert not isinstance(value, CompanyStore), f"Session.{name} gives the whole company"
    assert not any(isinstance(v, CompanyStore) for k, v in vars(session).items() if not k.startswith("_"))
    assert set(vars(session)) == {"_company", "principal"}
    assert session.principal.handle == "planner"


def test_a_verb_acts_as_the_sessions_principal_only(company, store, new_task):
    task = new_task()
    session = store.session(company.issue_token("planner", actor="alice").token)
    with pytest.raises(TypeError):
        session.get_task(task.id, actor="alice")
    assert session.get_task(task.id).id == task.id
    assert [t.id for t in session.pending_work()] == [t.id for t in company.pending_work("planner")]
    assert session.spec() == company.spec()
