"""make.customer(), make.grant(), make.staff(role=...) and friends: real rows, through services."""
from __future__ import annotations

import itertools
from datetime import timedelta

from models import CreditGrant, CreditPackage, FeaturePrice, Payment, Plan, db, utcnow
from services.ledger import customers
from services.ledger import posting as ledger
from services.staff import accounts as staff_service

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


class Factory:
    def customer(self, *, external_id: str | None = None, email: str | None = None,
                 name: str | None = None, plan: Plan | None = None, credits: int = 0,
                 subscription_status: str | None = None):
        n = next(_seq)
        c, _ = customers.upsert(external_id=external_id or f"cust_{n}",
                                email=email or f"customer{n}@example.com",
                                name=name if name is not None else f"Customer {n}",
                                plan_code=plan.code if plan else None,
                                subscription_status=subscription_status)
        if credits:
            ledger.grant(customer_id=c.id, credits=credits, source="promo", reason="test credits")
        return c

    def grant(self, customer, *, credits: int = 100, expires_in_days: float | None = None,
              source: str = "promo", **kw):
        expires_at = None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days)
        entry = ledger.grant(customer_id=customer.id, credits=credits, source=source,
                             expires_at=expires_at, reason=kw.pop("reason", "test grant"), **kw)
        return db.session.get(CreditGrant, entry.grant_id)

    def staff(self, *, role: str = "admin", email: str | None = None, password: str = PASSWORD,
              active: bool = True):
        n = next(_seq)
        s = staff_service.create(email=email or f"{role}{n}@creditdesk.test", role=role,
                                 password=password, name=f"{role.title()} {n}")
        if not active:
            s.active = False
            db.session.commit()
        s.plain_password = password
        return s

    def api_key(self, *, scopes: list[str] | None = None, name: str | None = None):
        key, plain = staff_service.create_api_key(name=name or f"key {next(_seq)}", scopes=scopes)
        return key, plain

    def plan(self, *, code: str | None = None, interval: str = "month", monthly_credits: int = 1000,
             price_minor: int = 1900, credit_expiry_days: int | None = 31, **kw) -> Plan:
        n = next(_seq)
        p = Plan(code=code or f"plan-{n}", name=kw.pop("name", f"Plan {n}"), interval=interval,
                 monthly_credits=monthly_credits, price_minor=price_minor,
                 credit_expiry_days=credit_expiry_days, **kw)
        db.session.add(p)
        db.session.commit()
        return p

    def package(self, *, credits: int = 1000, price_minor: int = 1000, currency: str = "USD",
                **kw) -> CreditPackage:
        n = next(_seq)
        p = CreditPackage(code=kw.pop("code", f"pack-{n}"), name=kw.pop("name", f"Pack {n}"),
                          credits=credits, price_minor=price_minor, currency=currency, **kw)
        db.session.add(p)
        db.session.commit()
        return p

    def feature_price(self, *, feature: str = "chat", credits_per_unit: int = 1, **kw) -> FeaturePrice:
        f = FeaturePrice(feature=feature, credits_per_unit=credits_per_unit,
                         label=kw.pop("label", feature.title()), **kw)
        db.session.add(f)
        db.session.commit()
        return f

    def payment(self, customer, *, provider: str = "stripe", amount_minor: int = 1000,
                currency: str = "USD", credits: int = 1000, status: str = "paid", **kw) -> Payment:
        n = next(_seq)
        p = Payment(customer_id=customer.id, provider=provider, amount_minor=amount_minor,
                    currency=currency, credits=credits, status=status,
                    provider_order_id=kw.pop("provider_order_id", f"order_{n}"),
                    provider_payment_id=kw.pop("provider_payment_id", f"pay_{n}"),
                    paid_at=kw.pop("paid_at", utcnow() if status == "paid" else None), **kw)
        db.session.add(p)
        db.session.commit()
        return p
