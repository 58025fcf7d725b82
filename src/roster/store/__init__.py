"""The durable store: SQLAlchemy Core over SQLite (default) or any portable SQL database."""

from roster.store.artifacts import ArtifactRecord
from roster.store.company import CompanyStore, Session
from roster.store.company_base import Principal
from roster.store.memory import MemoryEntry
from roster.store.messages import Message
from roster.store.principals import IssuedToken, TokenRecord
from roster.store.store import ApplyResult, Store
from roster.store.tasks import Task, TransitionOption

__all__ = ["ApplyResult", "ArtifactRecord", "CompanyStore", "IssuedToken", "MemoryEntry", "Message", "Principal",
           "Session", "Store", "Task", "TokenRecord", "TransitionOption"]
