"""flask --app wsgi reconcile-payments | rollup-ledger: finance commands (registered by dashboard.cli)."""
from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from services.ledger import rollup as ledger_rollup
from services.payments import reconcile as payment_reconcile


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
    for command in (reconcile_payments, rollup_ledger):
        app.cli.add_command(command)
