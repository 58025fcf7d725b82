"""The durable store: SQLAlchemy Core over SQLite (default) or any portable SQL database."""

from roster.store.company import CompanyStore, Session
from roster.store.company_base import Principal
from roster.store.principals import IssuedToken, TokenRecord
from roster.store.store import ApplyResult, Store
from roster.store.tasks import ArtifactRecord, Task, TransitionOption

__all__ = ["ApplyResult", "ArtifactRecord", "CompanyStore", "IssuedToken", "Principal", "Session", "Store", "Task",
           "TokenRecord", "TransitionOption"]
