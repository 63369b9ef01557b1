"""Feature pricing: how many credits one unit of each AI feature costs."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from dashboard.views._catalog import Area, ConfirmMixin, make_blueprint
from services.core import money
from services.core import settings as app_settings


class CostField(DecimalField):
    """Shows what was typed when it cannot be rounded to 6 places (a 25-digit number made the
    re-rendered form raise InvalidOperation, a 500); NumberRange then names the problem."""

    def _value(self):
        try:
            return super()._value()
        except InvalidOperation:
            return self.raw_data[0] if self.raw_data else ""


class PriceForm(ConfirmMixin, FlaskForm):
    feature = StringField("Feature key", [Optional(), Length(max=64)])
    label = StringField("Label", [DataRequired(), Length(max=120)])
    unit = StringField("Unit", [DataRequired(), Length(max=32)], default="request")
    credits_per_unit = IntegerField("Credits per unit", [InputRequired(), NumberRange(min=0)])
    provider_cost = CostField("Provider cost per unit", [Optional(), NumberRange(min=0, max=10**9)],
                              places=6)
    currency = StringField("Currency", [Length(min=3, max=3)], default="USD")


def _micros(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int((Decimal(str(value)) * 1_000_000).to_integral_value())
    except InvalidOperation:
        return None


def to_data(form: PriceForm) -> dict:
    return {"feature": form.feature.data or "", "label": form.label.data, "unit": form.unit.data,
            "credits_per_unit": form.credits_per_unit.data,
            "provider_cost_micros": _micros(form.provider_cost.data),
            "currency": (form.currency.data or "USD").strip().upper()}


def from_obj(price) -> dict:
    return {"feature": price.feature, "label": price.label, "unit": price.unit,
            "credits_per_unit": price.credits_per_unit,
            "provider_cost": Decimal(price.provider_cost_micros) / 1_000_000,
            "currency": price.currency}


bp = make_blueprint(Area(name="pricing", kind="price", permission="pricing.manage", form=PriceForm,
                         to_data=to_data, from_obj=from_obj, title="Feature pricing",
                         noun="Feature price", key_attr="feature", label_attr="label",
                         blurb="Credits charged for each unit of a feature when the backend sends a "
                               "quantity.",
                         impact_hint="Change the credits per unit to see how the last 30 days of usage "
                                     "would have been charged, before you save.",
                         create_label="Create price",
                         extra=lambda: {"price_per_credit": int(app_settings.get("price_per_credit_minor")),
                                        "micros_per_minor": money.micros_per_minor("USD")}),
                    field_map={"provider_cost_micros": "provider_cost"})
