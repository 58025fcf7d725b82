"""What the dashboard's tests share: signing a client in, reading a page's form token, and the portfolio
spec whose humans each work in one portfolio."""

from __future__ import annotations

import re

from conftest import FIX_LINT

CSRF = re.compile(r'name="csrf" value="([^"]*)"')

TWO_PORTFOLIOS = (FIX_LINT
                  .replace("company: acme\n", "company: acme\nworkspaces:\n  eng:\n    portfolios: {core: {}, web: {}}\n")
                  .replace("    states: [found,", "    portfolio: eng/core\n    states: [found,", 1)
                  .replace("agents:\n", """  site:
    portfolio: eng/web
    states: [todo, done]
    initial: todo
    transitions:
      finish: {from: todo, to: done, by: [human, builder]}
agents:
""", 1)
                  + "  carol: {scopes: [eng/web]}\n")
"""FIX_LINT with its workflow in portfolio eng/core, a second workflow ``site`` in eng/web, and human
``carol`` who works in eng/web only (alice and bob: the whole company)."""


def form_token(html: str) -> str:
    """The form token embedded in a dashboard page."""
    found = CSRF.search(html)
    assert found, "no form token on the page"
    return found.group(1)


def sign_in(client, token: str) -> str:
    """Sign ``client`` in with an API token through the sign-in form; returns the session's form token."""
    nonce = form_token(client.get("/sign-in").text)
    response = client.post("/sign-in", data={"csrf": nonce, "token": token, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return form_token(client.get("/").text)
