"""Credit packages: one-off packs of credits customers buy, at a fixed price or per credit."""
from __future__ import annotations

from decimal import Decimal

from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, SelectField, StringField, ValidationError
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from dashboard.views._catalog import (
    Area,
    ConfirmMixin,
    catalog_value,
    from_minor,
    make_blueprint,
    to_minor,
)
from services.catalog import packages as package_prices

PRICING_CHOICES = [("fixed", "A fixed price"), ("per_credit", "The price per credit (Settings)")]


class PackageForm(ConfirmMixin, FlaskForm):
    code = StringField("Code", [Optional(), Length(max=64)])
    name = StringField("Name", [DataRequired(), Length(max=120)])
    credits = IntegerField("Credits", [InputRequired(), NumberRange(min=1)])
    pricing = SelectField("Sold at", choices=PRICING_CHOICES, default="fixed")
    # as many decimals as the currency has (from_minor); places=2 turned 12.345 KWD into 12.35
    price = DecimalField("Price", [Optional(), NumberRange(min=0)], places=None)
    currency = StringField("Currency", [Length(min=3, max=3)], default="USD")
    discount = DecimalField("Discount (%)", [Optional(), NumberRange(
        min=0, max=90, message="Must be between 0%% and 90%%.")], places=None, default=0)
    expiry_days = IntegerField("Credits expire after (days)", [Optional(), NumberRange(min=1)])
    sort_order = IntegerField("Sort order", [Optional(), NumberRange(min=0)], default=0)

    def validate_discount(self, field) -> None:
        if field.data is not None and (Decimal(field.data) * 100) % 1:
            raise ValidationError("At most two decimals, e.g. 12.5.")


def discount_bp(percent) -> int:
    """12.5 (%) -> 1250 basis points; empty -> 0."""
    return int(Decimal(percent) * 100) if percent not in (None, "") else 0


def to_data(form: PackageForm) -> dict:
    currency = (form.currency.data or "USD").strip().upper()
    return {"code": form.code.data or "", "name": form.name.data, "credits": form.credits.data,
            "price_minor": to_minor(form.price.data, currency) if form.price.data is not None else None,
            "currency": currency, "expiry_days": form.expiry_days.data,
            "sort_order": form.sort_order.data, "pricing": form.pricing.data,
            "discount_bp": discount_bp(form.discount.data) if not form.discount.errors else None}


def from_obj(pack) -> dict:
    return {"code": pack.code, "name": pack.name, "credits": pack.credits,
            "price": from_minor(pack.price_minor, pack.currency), "currency": pack.currency,
            "expiry_days": pack.expiry_days, "sort_order": pack.sort_order,
            "pricing": pack.pricing, "discount": Decimal(pack.discount_bp or 0) / 100}


bp = make_blueprint(Area(name="packages", kind="package", permission="plans.manage",
                         form=PackageForm, to_data=to_data, from_obj=from_obj,
                         title="Credit packages", noun="Package",
                         blurb="A pack of credits bought once, at a fixed price or at the price "
                               "per credit of its currency less a discount.",
                         impact_hint="Change the credits, the price or how it is priced to see what "
                                     "the last 30 days of purchases would have given and cost, "
                                     "before you save.",
                         create_label="Create package"),
                    field_map={"price_minor": "price", "discount_bp": "discount"})
# The edit page shows what a package priced per credit sells for today.
bp.add_app_template_global(package_prices.price_per_credit, "price_per_credit")
bp.add_app_template_global(package_prices.effective_price, "package_price")


def percent_bp(bp: int | None) -> str:
    """Basis points as a percentage: 1250 -> 12.5%, 1000 -> 10%."""
    return catalog_value(bp or 0, "discount_bp")


bp.add_app_template_filter(percent_bp, "percent_bp")
