"""The OpenAPI document of the REST API, as checked in at ``docs/openapi.json``.

``python -m roster.api.openapi > docs/openapi.json`` regenerates it; ``tests/test_openapi.py`` fails
when the code and the checked-in file differ, so the published contract never drifts silently.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from roster.api.app import create_app
from roster.store import Store


def document() -> dict[str, Any]:
    """The OpenAPI document (it does not depend on the store's content)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'openapi.db'}")
        try:
            return create_app(store).openapi()
        finally:
            store.close()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
