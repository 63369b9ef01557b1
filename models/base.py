"""The SQLAlchemy handle and column helpers shared by every model.

`db` lives here (not in dashboard/) so that models depend on nothing of ours;
`dashboard.extensions` re-exports it.
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, BigInteger, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)

# 64-bit ids on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")
MAX_ROW_ID = 2**63 - 1  # the largest id a bigint column holds
# Credits and minor units are integers; 64-bit so that no sum overflows.
Credits = BigInteger
Json = JSON


def utcnow() -> datetime:
    """Naive UTC: every timestamp is stored as UTC without tzinfo on both databases."""
    return datetime.now(UTC).replace(tzinfo=None)


def id_pk() -> Mapped[int]:
    """The surrogate primary key every table with an id uses."""
    return mapped_column(BigId, primary_key=True)


def created(**kw) -> Mapped[datetime]:
    """`created_at`: set once when the row is inserted."""
    return mapped_column(default=utcnow, **kw)


def updated() -> Mapped[datetime]:
    """`updated_at`: set on insert and on every update through the ORM."""
    return mapped_column(default=utcnow, onupdate=utcnow)


class ArchivableMixin:
    """Catalog rows are archived, never deleted: old purchases and grants still point at them."""

    archived_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()

    @property
    def active(self) -> bool:
        return self.archived_at is None
