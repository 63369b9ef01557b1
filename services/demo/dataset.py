"""A deterministic, realistic demo data set: customers on every plan, months of history.

Writing 100,000 entries one service call at a time would take minutes, so the history is
simulated in memory with the ledger's own rules (draw order and split from `ledger.plan_draw`,
refunds back to the buckets they came from, expiry of due free credits, every entry fully
allocated) and then bulk-inserted in time order. `flask reconcile` proves the result.
"""
from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, text

from models import (
    Account,
    Allocation,
    AuditLog,
    CreditGrant,
    CreditPackage,
    Customer,
    FeaturePrice,
    JobRun,
    LedgerEntry,
    Payment,
    Plan,
    Refund,
    Setting,
    SettingChange,
    Staff,
    Task,
    TaskLog,
    WebhookEvent,
    db,
    utcnow,
)
from services.catalog.packages import per_credit_amount
from services.core import settings as app_settings
from services.ledger.rules import PAID_SOURCES, Actor, entry_row, plan_draw
from services.staff import accounts as staff_service

DEMO_STAFF = [
    ("admin@creditdesk.test", "admin", "Ada Admin", "demo-admin-password"),
    ("support@creditdesk.test", "support", "Sam Support", "demo-support-password"),
    ("finance@creditdesk.test", "finance", "Fin Finance", "demo-finance-password"),
]
PLANS = [  # code, name, interval, price_minor, monthly credits, credit expiry days
    ("pro-monthly", "Pro Monthly", "month", 1900, 1000, 31),
    ("pro-yearly", "Pro Yearly", "year", 19000, 1000, 31),
    ("lifetime", "Lifetime", "lifetime", 49900, 600, 31),
]
PACKAGES = [  # code, name, credits, price_minor (USD)
    ("starter", "Starter pack", 500, 500), ("standard", "Standard pack", 2000, 1800),
    ("pro", "Pro pack", 5000, 4000), ("studio", "Studio pack", 20000, 14000),
]
FEATURES = [  # feature, label, unit, credits per unit, provider cost micros per unit, weight
    ("chat", "AI chat", "message", 1, 2000, 70), ("image", "Image generation", "image", 5, 20000, 20),
    ("video", "Video generation", "clip", 40, 300000, 6), ("lip-sync", "Lip-sync", "clip", 25, 150000, 4),
]
INR_PER_USD = 84
# Razorpay sells in INR: the same four packs, priced per credit at INR_PER_USD paise a credit
# less a discount (code, name, credits, discount in basis points), so each costs INR_PER_USD x
# its USD price (500 credits: Rs 420; 20,000 credits at 30% off: Rs 11,760).
INR_PACKAGES = [
    ("starter-inr", "Starter pack (INR)", 500, 0), ("standard-inr", "Standard pack (INR)", 2000, 1000),
    ("pro-inr", "Pro pack (INR)", 5000, 2000), ("studio-inr", "Studio pack (INR)", 20000, 3000),
]
FREE_CREDITS = 50
FIRST_NAMES = ["Ava", "Liam", "Mia", "Noah", "Zoe", "Ethan", "Aria", "Leo", "Isla", "Kai", "Maya",
               "Arjun", "Priya", "Chen", "Yuki", "Lucas", "Sofia", "Omar", "Lena", "Ravi", "Nora",
               "Diego", "Emma", "Hugo", "Ines", "Jonas", "Kira", "Mateo", "Nina", "Pablo"]
LAST_NAMES = ["Smith", "Patel", "Garcia", "Kim", "Müller", "Rossi", "Sato", "Nguyen", "Silva",
              "Khan", "Jensen", "Dubois", "Cohen", "Singh", "Okafor", "Novak", "Larsen", "Costa"]


class G:  # an in-memory bucket, mirroring CreditGrant
    __slots__ = ("id", "account_id", "customer_id", "source", "amount", "remaining", "expires_at",
                 "expired_at", "cost_minor", "currency", "payment_id", "plan_id", "period",
                 "job_run_id", "created_at")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class Sim:
    """The ledger rules over plain objects; ids assigned here, rows collected for bulk insert."""

    def __init__(self, ids: dict[str, int]):
        self.next = dict(ids)
        self.grants: list[G] = []
        self.entries: list[dict] = []
        self.allocs: list[dict] = []
        self.live: dict[int, list[G]] = {}  # account -> buckets with credits
        self.accounts: dict[int, dict] = {}  # account id -> balance and version, as posted
        self.last_at: dict[int, datetime] = {}

    def _id(self, table: str) -> int:
        self.next[table] += 1
        return self.next[table]

    def account(self, acct: int, cust: int) -> dict:
        return self.accounts.setdefault(acct, {"id": acct, "customer_id": cust, "balance": 0,
                                               "version": 0})

    def _entry(self, acct: int, cust: int, at: datetime, type: str, amount: int, **kw) -> dict:
        # Entries of one account never go back in time, so ids and created_at agree.
        at = max(at, self.last_at.get(acct, at))
        self.last_at[acct] = at
        actor = Actor(kw.pop("actor_type", "system"), kw.pop("actor_id", None))
        e = entry_row(self.account(acct, cust), type=type, amount=amount, actor=actor, at=at,
                      id=self._id("entry"), **kw)
        self.entries.append(e)
        return e

    def _alloc(self, entry: dict, g: G, credits: int) -> None:
        self.allocs.append(dict(id=self._id("alloc"), entry_id=entry["id"], grant_id=g.id,
                                credits=credits))

    def grant(self, acct, cust, at, credits, source, *, expires_at=None, cost_minor=0,
              currency=None, payment_id=None, plan_id=None, period=None, key=None,
              type="grant", reason=None, actor_type="system", actor_id=None,
              job_run_id=None) -> dict:
        g = G(id=self._id("grant"), account_id=acct, customer_id=cust, source=source,
              amount=credits, remaining=credits, expires_at=expires_at, cost_minor=cost_minor,
              currency=currency, payment_id=payment_id, plan_id=plan_id, period=period,
              job_run_id=job_run_id, created_at=at)
        self.grants.append(g)
        self.live.setdefault(acct, []).append(g)
        e = self._entry(acct, cust, at, type, credits, grant_id=g.id, payment_id=payment_id,
                        idempotency_key=key, reason=reason, actor_type=actor_type,
                        actor_id=actor_id, job_run_id=job_run_id)
        self._alloc(e, g, credits)
        return e

    def expire_due(self, acct, cust, at) -> None:
        for g in list(self.live.get(acct, [])):
            if g.expires_at and g.expires_at <= at and g.remaining > 0 \
                    and g.source not in PAID_SOURCES:
                e = self._entry(acct, cust, g.expires_at, "expiry", -g.remaining, grant_id=g.id,
                                reason="credits expired", idempotency_key=f"expiry:{g.id}",
                                actor_type="job")
                self._alloc(e, g, -g.remaining)
                g.remaining, g.expired_at = 0, g.expires_at
                self.live[acct].remove(g)

    def debit(self, acct, cust, at, credits, *, feature, quantity=1, reference=None,
              task_id=None, key=None, type="debit", reason=None, actor_type="api_key",
              actor_id="1") -> dict | None:
        self.expire_due(acct, cust, at)
        if self.account(acct, cust)["balance"] < credits:
            return None
        order = sorted(self.live.get(acct, []), key=lambda g: (
            g.expires_at is None, g.expires_at or datetime.max, g.id))
        plan = plan_draw(order, credits)
        e = self._entry(acct, cust, at, type, -credits, feature=feature, quantity=quantity,
                        reference=reference, task_id=task_id, idempotency_key=key, reason=reason,
                        actor_type=actor_type, actor_id=actor_id)
        e["_drawn"] = []
        for g, take in plan:
            g.remaining -= take
            self._alloc(e, g, -take)
            e["_drawn"].append((g, take))
            if g.remaining == 0:
                self.live[acct].remove(g)
        return e

    def refund(self, debit: dict, at, credits, *, reason, key=None) -> dict:
        acct, cust = debit["account_id"], debit["customer_id"]
        e = self._entry(acct, cust, at, "refund", credits, related_entry_id=debit["id"],
                        feature=debit.get("feature"), reference=debit.get("reference"),
                        task_id=debit.get("task_id"), reason=reason, idempotency_key=key,
                        actor_type="system")
        left = credits
        for g, take in reversed(debit["_drawn"]):
            give = min(take, left)
            if give <= 0:
                break
            left -= give
            if g.expired_at is not None:  # an expired bucket: the credits go to a fresh one
                fresh = G(id=self._id("grant"), account_id=acct, customer_id=cust,
                          source="refund", amount=give, remaining=give,
                          expires_at=at + timedelta(days=365), created_at=at)
                self.grants.append(fresh)
                self.live[acct].append(fresh)
                self._alloc(e, fresh, give)
                continue
            if g.remaining == 0:
                self.live[acct].append(g)
            g.remaining += give
            self._alloc(e, g, give)
        return e

    def clawback(self, g: G, at, credits, *, reason, payment_id) -> dict:
        e = self._entry(g.account_id, g.customer_id, at, "clawback", -credits, grant_id=g.id,
                        payment_id=payment_id, reason=reason, actor_type="staff", actor_id="1")
        g.remaining -= credits
        self._alloc(e, g, -credits)
        if g.remaining == 0 and g in self.live[g.account_id]:
            self.live[g.account_id].remove(g)
        return e


def has_data() -> bool:
    return bool(db.session.scalar(select(func.count(Customer.id))))


def _month_starts(start: datetime, end: datetime) -> list[datetime]:
    out, m = [], start.replace(day=1, hour=0, minute=5, second=0, microsecond=0)
    while m <= end:
        if m >= start:
            out.append(m)
        m = (m.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def _add_months(d: datetime, n: int) -> datetime:
    y, m = divmod(d.month - 1 + n, 12)
    month_days = [31, 29 if (d.year + y) % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return d.replace(year=d.year + y, month=m + 1, day=min(d.day, month_days[m]))


def load(*, customers: int = 1000, seed: int = 7, months: int = 6,
         progress: Callable[[str], None] = lambda _m: None) -> dict:
    """Write the demo set into an empty database; returns counts and the time it took."""
    t0 = time.perf_counter()
    if has_data():
        raise RuntimeError("The database holds customers already; demo data loads into an empty one.")
    rng = random.Random(seed)
    s = db.session
    now = utcnow().replace(microsecond=0)
    start = _add_months(now, -months).replace(day=1, hour=0, minute=0, second=0)

    # Catalogue, settings and staff go through the ORM: they are few.
    plans = [Plan(code=c, name=n, interval=i, price_minor=p, currency="USD", monthly_credits=mc,
                  credit_expiry_days=ex, created_at=start,
                  description=f"{mc:,} credits every month")
             for c, n, i, p, mc, ex in PLANS]
    packages = [CreditPackage(code=c, name=n, credits=cr, price_minor=p, currency="USD",
                              sort_order=k, created_at=start)
                for k, (c, n, cr, p) in enumerate(PACKAGES)]
    inr_packages = [CreditPackage(code=c, name=n, credits=cr, currency="INR", pricing="per_credit",
                                  discount_bp=bp, sort_order=k, created_at=start,
                                  price_minor=per_credit_amount(credits=cr, price_per_credit=INR_PER_USD,
                                                                discount_bp=bp))
                    for k, (c, n, cr, bp) in enumerate(INR_PACKAGES)]
    features = [FeaturePrice(feature=f, label=lbl, unit=u, credits_per_unit=c,
                             provider_cost_micros=pc, currency="USD", created_at=start)
                for f, lbl, u, c, pc, _w in FEATURES]
    s.add_all(plans + packages + inr_packages + features)
    staff = []
    for email, role, name, password in DEMO_STAFF:
        if s.scalar(select(Staff).where(Staff.email == email)) is None:
            st = Staff(email=email, role=role, name=name,
                       password_hash=staff_service.hash_password(password), created_at=start)
            s.add(st)
            staff.append(st)
    s.flush()
    admin = s.scalar(select(Staff).where(Staff.role == "admin").order_by(Staff.id))
    s.add(Setting(key="free_monthly_credits", value=str(FREE_CREDITS), updated_by_id=admin.id))
    s.add(SettingChange(key="free_monthly_credits", old_value="30", new_value=str(FREE_CREDITS),
                        staff_id=admin.id, reason="Launch promotion",
                        created_at=start + timedelta(days=3)))
    s.add(Setting(key="price_per_credit_inr_minor", value=str(INR_PER_USD), updated_by_id=admin.id))
    s.add(SettingChange(key="price_per_credit_inr_minor", old_value="0", new_value=str(INR_PER_USD),
                        staff_id=admin.id, reason="Razorpay launch in India",
                        created_at=start + timedelta(days=1)))
    s.flush()

    def next_id(model) -> int:
        return s.scalar(select(func.coalesce(func.max(model.id), 0)))

    sim = Sim({"entry": next_id(LedgerEntry), "alloc": next_id(Allocation),
               "grant": next_id(CreditGrant), "job_run": next_id(JobRun)})
    cust_rows, acct_rows, pay_rows, refund_rows, task_rows, log_rows = [], [], [], [], [], []
    hook_rows, audit_rows, job_rows = [], [], []
    cid0, aid0, pid0, tid0 = (next_id(m) for m in (Customer, Account, Payment, Task))
    pay_id, task_id = pid0, tid0
    month_starts = _month_starts(start, now)
    feature_names = [f[0] for f in FEATURES]
    feature_weights = [f[5] for f in FEATURES]
    price = {f[0]: f[3] for f in FEATURES}
    plan_of = {p.code: p for p in plans}

    # Each customer's events, merged over everyone in time order.
    events: list[tuple[datetime, int, int, str, dict]] = []
    seq = 0
    for i in range(customers):
        cid, aid = cid0 + i + 1, aid0 + i + 1
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        r = rng.random()
        segment = ("free" if r < 0.6 else "month" if r < 0.8 else "year" if r < 0.92
                   else "lifetime")
        plan = {"month": plan_of["pro-monthly"], "year": plan_of["pro-yearly"],
                "lifetime": plan_of["lifetime"]}.get(segment)
        joined = start + timedelta(seconds=rng.randint(0, int((now - start).total_seconds() * .7)))
        status = "none" if plan is None else "active"
        if segment == "month" and rng.random() < 0.08:
            status = rng.choice(["past_due", "cancelled"])
        email = f"{first.lower()}.{last.lower().replace('ü', 'u')}{i}@example.com"
        ext = "usr_" + hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:12]
        cust_rows.append(dict(id=cid, external_id=ext,
                              email=email, name=f"{first} {last}",
                              plan_id=plan.id if plan else None, subscription_status=status,
                              subscription_provider="stripe" if plan else None,
                              subscription_id=f"sub_demo_{cid}" if segment in ("month", "year") else None,
                              created_at=joined, updated_at=joined))
        acct_rows.append(dict(id=aid, customer_id=cid, balance=0, version=0, updated_at=joined))
        intensity = rng.choice([0.1, 0.2, 0.3, 0.5, 0.5, 0.75, 1.5]) * (2 if plan else 1)

        def add(at, kind, cid=cid, aid=aid, **kw):
            nonlocal seq
            seq += 1
            if at <= now:
                events.append((at, seq, cid, kind, dict(aid=aid, **kw)))

        add(joined, "signup_bonus")
        if segment == "free":
            for m in month_starts:
                if m > joined:
                    add(m, "distribution", plan=None, period=m.strftime("%Y-%m"))
        elif segment == "month":
            k, at = 0, joined
            while at <= now and (status != "cancelled" or k < 3):
                add(at + timedelta(minutes=2), "invoice", plan=plan, n=k)
                k += 1
                at = _add_months(joined, k)
        else:
            if segment == "year":
                add(joined + timedelta(minutes=1), "plan_payment", plan=plan)
            else:
                add(joined + timedelta(minutes=1), "plan_payment", plan=plan)
            for m in month_starts:
                if m > joined:
                    add(m, "distribution", plan=plan, period=m.strftime("%Y-%m"))
        day = joined + timedelta(hours=1)
        while day <= now:
            for _ in range(int(rng.expovariate(1 / intensity) + 0.5)):
                add(day + timedelta(seconds=rng.randint(0, 86399)), "use")
            if rng.random() < 0.012 * intensity:
                add(day + timedelta(hours=rng.randint(1, 20)), "purchase")
            if rng.random() < 0.0015:
                add(day + timedelta(hours=3), "adjust")
            day += timedelta(days=1)
    events.sort(key=lambda e: (e[0], e[1]))
    progress(f"Simulating {len(events):,} events for {customers:,} customers…")

    purchases: list[tuple[dict, G, dict]] = []
    dist_counts: dict[str, list[int]] = {}
    dist_runs: dict[str, int] = {}
    dist_segments: dict[str, dict] = {}  # period -> the job_runs id its grants carry, as the job writes
    for at, _seq, cid, kind, ev in events:
        aid = ev["aid"]
        if kind == "signup_bonus":
            sim.grant(aid, cid, at, 100, "promo", expires_at=at + timedelta(days=30),
                      reason="Welcome bonus", key=f"welcome:{cid}")
        elif kind == "distribution":
            plan = ev["plan"]
            sim.expire_due(aid, cid, at)
            credits = plan.monthly_credits if plan else FREE_CREDITS
            if ev["period"] not in dist_runs:
                dist_runs[ev["period"]] = sim._id("job_run")
            segment = {"year": "yearly", "lifetime": "lifetime"}.get(plan.interval if plan else "",
                                                                     "free")
            sim.grant(aid, cid, at, credits, "distribution", expires_at=at + timedelta(days=31),
                      plan_id=plan.id if plan else None, period=ev["period"],
                      key=f"distribution:{ev['period']}:{cid}",
                      reason=f"Monthly credits {ev['period']} ({segment})",
                      actor_type="job", actor_id="distribute_credits",
                      job_run_id=dist_runs[ev["period"]])
            seg = dist_segments.setdefault(ev["period"], {}).setdefault(
                segment, {"customers": 0, "credits": 0})
            seg["customers"] += 1
            seg["credits"] += credits
            dist_counts.setdefault(ev["period"], [0, 0])[0] += 1
            dist_counts[ev["period"]][1] += credits
        elif kind in ("invoice", "plan_payment", "purchase"):
            pay_id += 1
            provider = "stripe" if kind != "purchase" or rng.random() < 0.65 else "razorpay"
            if kind == "purchase":
                pkg = rng.choices(packages, weights=[40, 35, 18, 7])[0]
                if provider == "razorpay":  # the same pack, sold in INR at the price per credit
                    pkg = inr_packages[packages.index(pkg)]
                    amount = per_credit_amount(credits=pkg.credits, price_per_credit=INR_PER_USD,
                                               discount_bp=pkg.discount_bp)
                else:
                    amount = pkg.price_minor
                credits, pkg_id, plan_id = pkg.credits, pkg.id, None
            else:
                plan = ev["plan"]
                credits = plan.monthly_credits if kind == "invoice" else 0
                amount, pkg_id, plan_id = plan.price_minor, None, plan.id
            currency = pkg.currency if kind == "purchase" else plan.currency
            ref = hashlib.sha256(f"{seed}:{pay_id}".encode()).hexdigest()[:14]
            pay = dict(id=pay_id, customer_id=cid, provider=provider,
                       kind="package" if kind == "purchase" else "subscription",
                       provider_order_id=("cs_demo_" if provider == "stripe" else "order_demo") + ref,
                       provider_payment_id=("pi_demo_" if provider == "stripe" else "pay_demo") + ref,
                       package_id=pkg_id, plan_id=plan_id, amount_minor=amount,
                       currency=currency, credits=credits, status="paid", refunded_minor=0,
                       created_at=at, paid_at=at)
            pay_rows.append(pay)
            if provider == "razorpay":
                hook_type = "payment.captured"
            else:
                hook_type = "checkout.session.completed" if kind == "purchase" else "invoice.paid"
            hook_rows.append(dict(provider=provider, type=hook_type,
                                  event_id=("evt_demo_" if provider == "stripe" else "rzp_evt_") + ref,
                                  payload='{"demo": true}', status="processed", attempts=1,
                                  created_at=at, processed_at=at))
            if credits:
                source = "purchase" if kind == "purchase" else "subscription"
                e = sim.grant(aid, cid, at, credits, source, cost_minor=amount, currency=currency,
                              payment_id=pay_id, plan_id=plan_id,
                              key=f"payment:{provider}:{pay['provider_payment_id']}",
                              actor_type="webhook", reason=f"{source} via {provider}")
                if kind == "purchase":
                    purchases.append((pay, sim.grants[-1], e))
        elif kind == "use":
            feature = rng.choices(feature_names, weights=feature_weights)[0]
            qty = rng.randint(1, 4) if feature == "chat" else 1
            credits = price[feature] * qty
            if feature in ("video", "lip-sync"):
                task_id += 1
                e = sim.debit(aid, cid, at, credits, feature=feature, quantity=qty,
                              task_id=task_id, key=f"task:{task_id}:charge",
                              reference=f"project:{rng.randint(1, 400)}")
                if e is None:
                    task_id -= 1
                    continue
                roll = rng.random()
                deadline = at + timedelta(minutes=10)
                status = "succeeded" if roll < 0.9 else "failed"
                finished = at + timedelta(seconds=rng.randint(20, 400))
                if finished > now:
                    status, finished = "processing", None
                actual = credits
                if status == "succeeded":
                    actual = max(1, credits - rng.randint(0, credits // 4))
                    if actual < credits:
                        sim.refund(e, finished, credits - actual, reason="task settled below estimate",
                                   key=f"task:{task_id}:settle")
                elif status == "failed":
                    actual = 0
                    sim.refund(e, finished, credits, reason="task failed",
                               key=f"task:{task_id}:refund")
                task_rows.append(dict(
                    id=task_id, customer_id=cid, type=feature, mode="async", status=status,
                    priority=0, estimated_credits=credits, charged_credits=credits,
                    actual_credits=actual if status != "processing" else None,
                    refunded_credits=credits - actual if status != "processing" else 0,
                    charge_entry_id=e["id"], input={"prompt": "demo"},
                    output=({"url": f"https://cdn.example.com/{task_id}.mp4"}
                            if status == "succeeded" else None),
                    error="provider returned 500: upstream timeout" if status == "failed" else None,
                    provider="demo-video", external_task_id=f"ext_{task_id}", attempts=1,
                    deadline_at=deadline, created_at=at, updated_at=finished or at,
                    started_at=at, finished_at=finished))
                log_rows.append(dict(task_id=task_id, level="info", message="task created, estimate charged",
                                     data={"credits": credits}, created_at=at))
                if finished:
                    log_rows.append(dict(task_id=task_id, level="info" if status == "succeeded" else "error",
                                         message=f"task {status}", data={"actual": actual},
                                         created_at=finished))
            else:
                sim.debit(aid, cid, at, credits, feature=feature, quantity=qty,
                          key=f"demo:{sim.next['entry'] + 1}")
        elif kind == "adjust":
            credits = rng.choice([50, 100, 200, -20])
            reason = rng.choice(["Goodwill: failed generation", "Service outage compensation",
                                 "Duplicate charge correction", "Support gesture"])
            if credits > 0:
                sim.grant(aid, cid, at, credits, "adjustment", type="adjustment",
                          reason=reason, actor_type="staff", actor_id=str(admin.id))
            else:
                sim.debit(aid, cid, at, -credits, feature=None, type="adjustment", reason=reason,
                          actor_type="staff", actor_id=str(admin.id), quantity=None)
            audit_rows.append(dict(staff_id=admin.id, actor=admin.email, action="credits.adjust",
                                   target_type="customer", target_id=str(cid), ip="127.0.0.1",
                                   before=None, after={"credits": credits}, reason=reason,
                                   created_at=at))

    # A few purchase refunds: unused credits clawed back, money returned (processed).
    for pay, g, _e in rng.sample(purchases, k=min(len(purchases), max(1, len(purchases) // 40))):
        if g.remaining <= 0:
            continue
        credits = g.remaining
        amount = pay["amount_minor"] * credits // g.amount
        at = min(now, pay["paid_at"] + timedelta(days=rng.randint(1, 10)))
        e = sim.clawback(g, at, credits, reason="Refund requested by customer",
                         payment_id=pay["id"])
        pay["refunded_minor"] = amount
        pay["status"] = "refunded" if amount == pay["amount_minor"] else "partially_refunded"
        rid = len(refund_rows) + 1
        refund_rows.append(dict(payment_id=pay["id"], customer_id=pay["customer_id"],
                                status="processed", credits=credits, amount_minor=amount,
                                currency=pay["currency"], reason="Customer changed their mind",
                                idempotency_key=f"refund_demo_{seed}_{rid}",
                                provider_refund_id=f"re_demo_{seed}_{rid}",
                                requested_by_id=admin.id, approved_by_id=admin.id,
                                clawback_entry_id=e["id"], attempts=1, created_at=at,
                                updated_at=at, processed_at=at))
    for acct_row in acct_rows:  # the hourly expiry job has run up to now
        sim.expire_due(acct_row["id"], acct_row["customer_id"], now)
    for period, (n, credits) in sorted(dist_counts.items()):
        # The run of the period, as the job writes it: its grants carry this row's id.
        at = datetime.strptime(period, "%Y-%m").replace(minute=5)
        end = at + timedelta(seconds=4)
        attempt = {"attempt": 1, "kind": "run", "trigger": "schedule",
                   "started_at": at.isoformat() + "Z", "finished_at": end.isoformat() + "Z",
                   "status": "succeeded", "attempted": n, "granted": n, "errors": 0,
                   "expiry_errors": 0, "fixed": 0}
        job_rows.append(dict(id=dist_runs[period], job="distribute_credits", period=period,
                             status="succeeded", trigger="schedule", host="demo", started_at=at,
                             heartbeat_at=end, finished_at=end, users_count=n,
                             processed_count=n, error_count=0,
                             details={"credits": credits, "segments": dist_segments[period],
                                      "expiry_errors": 0, "attempts": [attempt],
                                      "attempt_floor": 0}))

    for a in acct_rows:
        posted = sim.accounts.get(a["id"], {"balance": 0, "version": 0})
        a["balance"], a["version"] = posted["balance"], posted["version"]
    entry_cols = {c.name for c in LedgerEntry.__table__.columns}
    entries = [{k: v for k, v in e.items() if k in entry_cols} for e in sim.entries]
    for e in entries:
        for col in entry_cols:
            e.setdefault(col, None)
    grant_cols = [c.name for c in CreditGrant.__table__.columns]
    grants = [{c: getattr(g, c, None) for c in grant_cols} for g in sim.grants]
    for g in grants:
        g["cost_minor"] = g["cost_minor"] or 0

    progress(f"Writing {len(entries):,} ledger entries…")
    conn = s.connection()
    for table, rows in [(JobRun.__table__, job_rows),  # before the grants that point at them
                        (Customer.__table__, cust_rows), (Account.__table__, acct_rows),
                        (Payment.__table__, pay_rows), (Task.__table__, task_rows),
                        (CreditGrant.__table__, grants), (LedgerEntry.__table__, entries),
                        (Allocation.__table__, sim.allocs), (TaskLog.__table__, log_rows),
                        (Refund.__table__, refund_rows), (WebhookEvent.__table__, hook_rows),
                        (AuditLog.__table__, audit_rows)]:
        for chunk in _chunks(rows):
            conn.execute(insert(table), chunk)
    _reset_sequences(s)
    s.commit()
    app_settings.clear_cache()  # the settings written above, read at once by this process
    # Planner statistics for what was just bulk-loaded: without them SQLite sorts 70,000 ids to
    # show 50 rows of a broad filter instead of walking the primary key (and PostgreSQL would
    # wait for autovacuum to learn the tables' shape).
    s.execute(text("ANALYZE"))
    s.commit()
    return {"customers": len(cust_rows), "entries": len(entries), "payments": len(pay_rows),
            "tasks": len(task_rows), "seconds": time.perf_counter() - t0}


def _chunks(rows: list, size: int = 5000):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _reset_sequences(s) -> None:
    """Explicit ids were written: move PostgreSQL's sequences past them."""
    if s.get_bind().dialect.name != "postgresql":
        return
    for table in db.metadata.sorted_tables:
        if "id" in table.c and table.c.id.autoincrement:
            s.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"))
