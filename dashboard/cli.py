"""flask --app wsgi <command>: staff, API keys, demo data, reconcile."""
from __future__ import annotations

import secrets
import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from models.staff import ROLES
from services.core.errors import ServiceError
from services.ledger import reconcile as reconcile_service
from services.ledger import rollup as ledger_rollup
from services.payments import reconcile as payment_reconcile
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


def init_app(app: Flask) -> None:
    for command in (create_staff, create_api_key, reconcile, seed_demo, create_db_role,
                    reconcile_payments, rollup_ledger):
        app.cli.add_command(command)
