"""flask --app wsgi <command>: staff, API keys, demo data, reconcile."""
from __future__ import annotations

import secrets
import sys

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from dashboard.filters import money
from models.staff import ROLES
from services.core.errors import ServiceError
from services.ledger import reconcile as reconcile_service
from services.ledger import rollup as ledger_rollup
from services.payments import reconcile as payment_reconcile
from services.payments import sandbox as sandbox_service
from services.staff import accounts as staff_service


@click.command("create-staff")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", help="At least 12 characters; generated and printed when omitted.")
@click.option("--name", default="")
@with_appcontext
def create_staff(email: str, role: str, password: str | None, name: str) -> None:
    """Create a staff member who can sign in to the dashboard."""
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    try:
        staff = staff_service.create(email=email, role=role, password=password, name=name)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Created {staff.role} {staff.email}.")
    if generated:
        click.echo(f"Password (shown once): {password}")


@click.command("create-api-key")
@click.option("--name", required=True)
@click.option("--scopes", default="", help="Comma-separated; all scopes when omitted: "
              + ",".join(staff_service.API_SCOPES))
@click.option("--rate-limit", default="", help="This key's own limit, e.g. \"100 per minute\"; "
              "not throttled when omitted (customers keep their API_CUSTOMER_RATE_LIMIT).")
@with_appcontext
def create_api_key(name: str, scopes: str, rate_limit: str) -> None:
    """Create an API key for the product backend; prints the key once."""
    wanted = [s.strip() for s in scopes.split(",") if s.strip()] or None
    try:
        key, plain = staff_service.create_api_key(name=name, scopes=wanted, rate_limit=rate_limit)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    limit = f"rate limit {key.rate_limit}" if key.rate_limit else "not throttled"
    click.echo(f"API key {key.name!r} (id {key.id}, scopes {key.scopes}, {limit}). Store it now; "
               "it is not shown again:")
    click.echo(plain)


@click.command("reconcile")
@with_appcontext
def reconcile() -> None:
    """Check the ledger invariants; exit status 1 on any violation."""
    report = reconcile_service.run()
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@click.command("seed-demo")
@click.option("--customers", "n_customers", default=1000, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--months", default=6, show_default=True)
@click.option("--if-empty", is_flag=True, help="Do nothing when customers exist already.")
@with_appcontext
def seed_demo(n_customers: int, seed: int, months: int, if_empty: bool) -> None:
    """Load a deterministic, realistic demo data set (through the ledger rules)."""
    from services.demo import dataset as demo

    if if_empty and demo.has_data():
        click.echo("Demo data already loaded; skipping.")
        return
    stats = demo.load(customers=n_customers, seed=seed, months=months,
                      progress=lambda msg: click.echo(msg))
    click.echo(f"Loaded {stats['customers']:,} customers, {stats['entries']:,} ledger entries, "
               f"{stats['payments']:,} payments, {stats['tasks']:,} tasks in {stats['seconds']:.1f} s.")


@click.command("create-db-role")
@click.option("--name", default="creditdesk_app", show_default=True)
@click.option("--password-env", metavar="VAR",
              help="Read the password from this environment variable; generated and printed "
                   "once when omitted.")
@with_appcontext
def create_db_role(name: str, password_env: str | None) -> None:
    """Create (or reset) the PostgreSQL login role the app should connect as: row rights only,
    no TRUNCATE, no ownership (docs/security.md). Run as the owner that runs migrations."""
    import os

    from models import db
    from services.core import db_roles

    password = None
    if password_env:
        # The variable is named on the command line, so it is read here, when the command runs;
        # the password never enters app.config.
        password = os.environ.get(password_env) or None
        if not password:
            raise click.ClickException(f"{password_env} is not set.")
    try:
        with db.engine.begin() as conn:
            password = db_roles.create(conn, name=name, password=password)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Role {name} can read and write rows of {db.engine.url.database}; nothing more.")
    if not password_env:
        click.echo(f"Password (shown once): {password}")
    url = db.engine.url.set(username=name, password=None).render_as_string()
    click.echo(f"Point the app's DATABASE_URL at it (with its password): {url}")


@click.command("reconcile-payments")
@click.option("--all", "everything", is_flag=True, help="List matched items too, not only problems.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write every item to this CSV file.")
@with_appcontext
def reconcile_payments(everything: bool, csv_path: str | None) -> None:
    """Match every provider payment and refund with grants and claw-backs; exit 1 on a problem."""
    result = payment_reconcile.run()
    for line in result.lines(everything=everything):
        click.echo(line)
    if csv_path:
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(payment_reconcile.csv_text(result))
        click.echo(f"Wrote {len(result.items):,} items to {csv_path}.")
    sys.exit(0 if result.ok else 1)


@click.command("rollup-ledger")
@click.option("--full", is_flag=True, help="Rebuild every day from the first ledger entry.")
@with_appcontext
def rollup_ledger(full: bool) -> None:
    """Bring the analytics rollups (ledger_daily) up to the last complete UTC day."""
    res = ledger_rollup.refresh(full=full)
    click.echo(f"Recomputed {res.days:,} day(s), {res.rows:,} rollup rows; "
               f"complete through {res.rolled_through}.")


@click.group("sandbox")
def sandbox() -> None:
    """Play the customer of the local provider doubles (docs/payments.md, "Sandbox")."""


def _webhook_base(url: str | None) -> str:
    cfg = current_app.config
    return url or cfg.get("SANDBOX_WEBHOOK_URL") or cfg.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000"


def _run_sandbox(action, **kw) -> None:
    try:
        result = action(**kw)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{result.action.capitalize()} payment #{result.payment_id} at the {result.provider} "
               f"double ({result.reference}).")
    for d in result.deliveries:
        click.echo(f"  {d.type}: HTTP {d.http_status}, {d.status}{' (duplicate)' if d.duplicate else ''}")


@sandbox.command("pay")
@click.argument("reference")
@click.option("--url", help="Base URL of the running Creditdesk that receives the webhooks "
              "(default: SANDBOX_WEBHOOK_URL, else PUBLIC_BASE_URL).")
@with_appcontext
def sandbox_pay(reference: str, url: str | None) -> None:
    """Pay a Checkout Session / Razorpay order (or our payment id) and send its webhooks."""
    _run_sandbox(sandbox_service.pay, reference=reference, webhook_base=_webhook_base(url))


@sandbox.command("refund")
@click.argument("reference")
@click.option("--amount", type=click.IntRange(min=1), help="Minor units; all that is left when omitted.")
@click.option("--url", help="Base URL of the running Creditdesk that receives the webhooks.")
@with_appcontext
def sandbox_refund(reference: str, amount: int | None, url: str | None) -> None:
    """Refund a paid payment (our id, pi_/pay_ id, or session/order id) and send its webhooks."""
    _run_sandbox(sandbox_service.refund, reference=reference, amount_minor=amount,
                 webhook_base=_webhook_base(url))


@sandbox.command("list")
@with_appcontext
def sandbox_list() -> None:
    """Checkouts and orders waiting to be paid, and payments the sandbox can refund."""
    for provider, reason in sandbox_service.availability().items():
        click.echo(f"{provider}: {'local double' if reason is None else 'unavailable: ' + reason}")
    for title, rows, ref in (("Waiting for payment", sandbox_service.pending(), "provider_order_id"),
                             ("Paid in the sandbox", sandbox_service.refundable(), "provider_payment_id")):
        click.echo(f"\n{title}:")
        if not rows:
            click.echo("  (none)")
        for r in rows:
            p = r.payment
            click.echo(f"  #{p.id}  {p.provider:8}  {getattr(p, ref)}  {p.credits:,} credits  "
                       f"{money(p.amount_minor, p.currency)}  {r.email}  [{p.status}]")


def init_app(app: Flask) -> None:
    for command in (create_staff, create_api_key, reconcile, seed_demo, create_db_role,
                    reconcile_payments, rollup_ledger, sandbox):
        app.cli.add_command(command)
