"""Plans: what subscribers pay and the credits they receive each month."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from dashboard.views._catalog import Area, ConfirmMixin, from_minor, make_blueprint, to_minor

INTERVALS = [("month", "Monthly"), ("year", "Yearly"), ("lifetime", "Lifetime"), ("free", "Free")]


class PlanForm(ConfirmMixin, FlaskForm):
    code = StringField("Code", [Optional(), Length(max=64)])
    name = StringField("Name", [DataRequired(), Length(max=120)])
    interval = SelectField("Billing interval", choices=INTERVALS, default="month")
    # as many decimals as the currency has (from_minor); places=2 turned 12.345 KWD into 12.35
    price = DecimalField("Price", [Optional(), NumberRange(min=0)], places=None)
    currency = StringField("Currency", [Length(min=3, max=3)], default="USD")
    monthly_credits = IntegerField("Credits per month", [InputRequired(), NumberRange(min=0)])
    credit_expiry_days = IntegerField("Credits expire after (days)", [Optional(), NumberRange(min=1)])
    stripe_price_id = StringField("Stripe price id", [Optional(), Length(max=128)])
    description = TextAreaField("Description", [Optional(), Length(max=2000)])
    low_balance_threshold = IntegerField("Low-balance threshold (credits)",
                                         [Optional(), NumberRange(min=0)])


def to_data(form: PlanForm) -> dict:
    currency = (form.currency.data or "USD").strip().upper()
    return {"code": form.code.data or "", "name": form.name.data, "interval": form.interval.data,
            "price_minor": to_minor(form.price.data, currency) if form.price.data is not None else None,
            "currency": currency, "monthly_credits": form.monthly_credits.data,
            "credit_expiry_days": form.credit_expiry_days.data,
            "stripe_price_id": form.stripe_price_id.data, "description": form.description.data,
            "low_balance_threshold": form.low_balance_threshold.data}


def from_obj(plan) -> dict:
    return {"code": plan.code, "name": plan.name, "interval": plan.interval,
            "price": from_minor(plan.price_minor, plan.currency), "currency": plan.currency,
            "monthly_credits": plan.monthly_credits, "credit_expiry_days": plan.credit_expiry_days,
            "stripe_price_id": plan.stripe_price_id, "description": plan.description,
            "low_balance_threshold": plan.low_balance_threshold}


bp = make_blueprint(Area(name="plans", kind="plan", permission="plans.manage", form=PlanForm,
                         to_data=to_data, from_obj=from_obj, title="Plans", noun="Plan",
                         blurb="Subscribers pay the price every interval and receive the monthly credits.",
                         impact_hint="Change the price or the monthly credits to see how many customers "
                                     "and how many credits per month it affects, before you save.",
                         create_label="Create plan"),
                    field_map={"price_minor": "price"})
