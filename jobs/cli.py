"""flask --app wsgi run-job NAME [--dry-run] [--period YYYY-MM]: a job now, in this process."""
from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from jobs import JOBS, spec
from services.core.errors import ServiceError
from services.jobs import distribution


@click.command("run-job")
@click.argument("name", type=click.Choice(sorted(JOBS) + sorted(n.replace("_", "-") for n in JOBS)))
@click.option("--dry-run", is_flag=True, help="distribute_credits only: show what would be granted.")
@click.option("--period", help="distribute_credits: YYYY-MM (default: this month). Others: any key.")
@with_appcontext
def run_job(name: str, dry_run: bool, period: str | None) -> None:
    """Run a scheduled job now. Exactly once per period: a period already run is a no-op."""
    js = spec(name)
    try:
        if js.name == "distribute_credits":
            result = distribution.run(period=period, trigger="cli", dry_run=dry_run)
            _print_distribution(result)
            sys.exit(0 if result.status in ("succeeded", "preview") else 1)
        if dry_run:
            raise click.UsageError("--dry-run applies to distribute_credits only")
        from jobs import run
        r = run(js.name, period=period, trigger="cli")
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{js.name} period {r.period}: run {r.id} {r.status}; users {r.users_count}, "
               f"processed {r.processed_count}, errors {r.error_count}")
    if r.job == "reconcile_ledger" and r.details:
        click.echo("Ledger is consistent." if r.details.get("ok")
                   else f"{r.error_count} violation(s); see the jobs page.")
    sys.exit(0 if r.status == "succeeded" else 1)


def _print_distribution(result) -> None:
    if result.dry_run:
        click.echo(f"Dry run for {result.period}: {result.users_count} customers would receive "
                   f"{result.credits:,} credits; {result.expired.get('grants', 0)} grants due to "
                   "expire first.")
        for name, seg in result.segments.items():
            click.echo(f"  {name:<9} {seg['customers']:>8,} customers {seg['credits']:>12,} credits")
        for row in result.rows[:20]:
            click.echo(f"  #{row['customer_id']} {row['email']} {row['segment']} {row['credits']}")
        if len(result.rows) > 20 or result.rows_truncated:
            click.echo("  ...")
        return
    what = "already ran" if result.already_done else "ran"
    click.echo(f"distribute_credits {result.period} {what}: run {result.run_id} {result.status}; "
               f"usersCount {result.users_count}, processedCount {result.processed_count}, "
               f"errorCount {result.error_count}")


@click.command("deliver-webhooks")
@with_appcontext
def deliver_webhooks() -> None:
    """Send pending outbound webhooks now (the deliver_webhooks job, by hand)."""
    from jobs import run
    r = run("deliver_webhooks", trigger="cli")
    d = r.details or {}
    click.echo(f"deliver_webhooks: run {r.id} {r.status}; dispatched {d.get('dispatched', 0)} "
               f"events, {d.get('attempted', 0)} attempts ({d.get('succeeded', 0)} succeeded, "
               f"{d.get('failed', 0)} failed)")
    sys.exit(0 if r.status == "succeeded" else 1)


def init_app(app: Flask) -> None:
    app.cli.add_command(run_job)
    app.cli.add_command(deliver_webhooks)
