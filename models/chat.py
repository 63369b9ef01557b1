"""The prompt cache of the metered chat endpoint (seed 001): one answer per normalized prompt + model."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Credits, Json, created, db, id_pk


class PromptCache(db.Model):
    """A cached chat answer, served until `expires_at`; `hits` counts the answers it saved."""

    __tablename__ = "prompt_cache"

    id: Mapped[int] = id_pk()
    key: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of normalized prompt + model
    model: Mapped[str] = mapped_column(String(128))
    content: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    usage: Mapped[dict | None] = mapped_column(Json)
    credits: Mapped[int] = mapped_column(Credits, default=0)  # what the call that filled it cost
    hits: Mapped[int] = mapped_column(Credits, default=0)
    created_at: Mapped[datetime] = created()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_hit_at: Mapped[datetime | None]
