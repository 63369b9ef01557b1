"""What is sold and what features cost: plans, credit packages, feature prices, settings."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ArchivableMixin, Credits, created, db, id_pk, utcnow

PLAN_INTERVALS = ("free", "month", "year", "lifetime")
PACKAGE_PRICING = ("fixed", "per_credit")


class Plan(ArchivableMixin, db.Model):
    __tablename__ = "plans"

    id: Mapped[int] = id_pk()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    interval: Mapped[str] = mapped_column(String(16))  # free | month | year | lifetime
    price_minor: Mapped[int] = mapped_column(Credits, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    monthly_credits: Mapped[int] = mapped_column(Credits, default=0)
    credit_expiry_days: Mapped[int | None]
    stripe_price_id: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    # Low-balance notice threshold of the plan's customers; NULL = the setting.
    low_balance_threshold: Mapped[int | None] = mapped_column(Credits)


class CreditPackage(ArchivableMixin, db.Model):
    __tablename__ = "credit_packages"

    id: Mapped[int] = id_pk()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    credits: Mapped[int] = mapped_column(Credits)
    # The fixed price; a per_credit package sells at credits x the price per credit of its
    # currency less `discount_bp` (services/catalog/packages.py) and keeps this for going back.
    price_minor: Mapped[int] = mapped_column(Credits)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    expiry_days: Mapped[int | None]
    sort_order: Mapped[int] = mapped_column(default=0)
    pricing: Mapped[str] = mapped_column(String(16), default="fixed", server_default="fixed")
    # Discount on the per-credit price in basis points (1,000 = 10%); 0 for fixed packages.
    discount_bp: Mapped[int] = mapped_column(default=0, server_default="0")


class FeaturePrice(ArchivableMixin, db.Model):
    """Credits per unit of a feature, and what one unit costs us at the AI provider."""

    __tablename__ = "feature_prices"

    id: Mapped[int] = id_pk()
    feature: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(120), default="")
    unit: Mapped[str] = mapped_column(String(32), default="request")
    credits_per_unit: Mapped[int] = mapped_column(Credits)
    # Millionths of the currency's major unit, so that $0.0004 per token is exact.
    provider_cost_micros: Mapped[int] = mapped_column(Credits, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")


class Setting(db.Model):
    """One tunable value; the registry of names, types and defaults is services/settings.py."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))


class SettingChange(db.Model):
    __tablename__ = "setting_changes"

    id: Mapped[int] = id_pk()
    key: Mapped[str] = mapped_column(String(64), index=True)
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str] = mapped_column(Text)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created(index=True)
