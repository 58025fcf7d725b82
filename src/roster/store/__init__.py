"""The durable store: SQLAlchemy Core over SQLite (default) or any portable SQL database."""

from roster.store.store import ApplyResult, Store
from roster.store.tasks import ArtifactRecord, CompanyStore, Task, TransitionOption

__all__ = ["ApplyResult", "ArtifactRecord", "CompanyStore", "Store", "Task", "TransitionOption"]
