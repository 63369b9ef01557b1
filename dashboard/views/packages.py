"""Credit packages: one-off packs of credits customers buy."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from dashboard.views._catalog import Area, ConfirmMixin, from_minor, make_blueprint, to_minor


class PackageForm(ConfirmMixin, FlaskForm):
    code = StringField("Code", [Optional(), Length(max=64)])
    name = StringField("Name", [DataRequired(), Length(max=120)])
    credits = IntegerField("Credits", [InputRequired(), NumberRange(min=1)])
    # as many decimals as the currency has (from_minor); places=2 turned 12.345 KWD into 12.35
    price = DecimalField("Price", [InputRequired(), NumberRange(min=0)], places=None)
    currency = StringField("Currency", [Length(min=3, max=3)], default="USD")
    expiry_days = IntegerField("Credits expire after (days)", [Optional(), NumberRange(min=1)])
    sort_order = IntegerField("Sort order", [Optional(), NumberRange(min=0)], default=0)


def to_data(form: PackageForm) -> dict:
    currency = (form.currency.data or "USD").strip().upper()
    return {"code": form.code.data or "", "name": form.name.data, "credits": form.credits.data,
            "price_minor": to_minor(form.price.data, currency) if form.price.data is not None else None,
            "currency": currency, "expiry_days": form.expiry_days.data,
            "sort_order": form.sort_order.data}


def from_obj(pack) -> dict:
    return {"code": pack.code, "name": pack.name, "credits": pack.credits,
            "price": from_minor(pack.price_minor, pack.currency), "currency": pack.currency,
            "expiry_days": pack.expiry_days, "sort_order": pack.sort_order}


bp = make_blueprint(Area(name="packages", kind="package", permission="plans.manage",
                         form=PackageForm, to_data=to_data, from_obj=from_obj,
                         title="Credit packages", noun="Package",
                         blurb="A pack of credits bought once, at this price.",
                         impact_hint="Change the credits or the price to see what the last 30 days of "
                                     "purchases would have given and cost, before you save.",
                         create_label="Create package"),
                    field_map={"price_minor": "price"})
