"""Feature prices: how many credits a use of a feature costs."""
from __future__ import annotations

from sqlalchemy import bindparam, select

from models import FeaturePrice, db
from services.core.db import driver, run
from services.core.errors import ValidationFailed

MAX_QUANTITY = 10**9


def price_for(feature: str) -> FeaturePrice | None:
    """The active price row of a feature, or None."""
    return db.session.scalar(select(FeaturePrice).where(FeaturePrice.feature == feature,
                                                        FeaturePrice.archived_at.is_(None)))


def credits_for(*, feature: str, quantity: int = 1) -> int:
    """Credits for `quantity` units of `feature`; 422 when the feature has no active price."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity <= MAX_QUANTITY:
        raise ValidationFailed("quantity must be a whole number between 1 and 1,000,000,000",
                               details={"quantity": "out of range"})
    pg = driver(db.session())
    if pg is not None:  # every API debit: straight through the driver, prepared by psycopg
        row = run(pg, _PG_UNIT_PRICE, {"feature": feature}).fetchone()
        per_unit = row[0] if row else None
    else:
        per_unit = db.session.execute(_UNIT_PRICE, {"feature": feature}).scalar()
    if per_unit is None:
        raise ValidationFailed(f"Feature {feature!r} has no price; send credits explicitly.",
                               details={"feature": "no price for this feature"})
    return per_unit * quantity


# Every API debit prices itself: one column, a statement built once (no ORM object to load).
_UNIT_PRICE = select(FeaturePrice.__table__.c.credits_per_unit).where(
    FeaturePrice.__table__.c.feature == bindparam("feature"),
    FeaturePrice.__table__.c.archived_at.is_(None))
_PG_UNIT_PRICE = ("SELECT credits_per_unit FROM feature_prices "
                  "WHERE feature = %(feature)s AND archived_at IS NULL")
