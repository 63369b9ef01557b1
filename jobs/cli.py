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
@click.option("--dry-run", is_flag=True, help="distribute_credits only: show what would be granted "
              "(for a period that ran: that run and what a retry would do).")
@click.option("--period", help="distribute_credits: YYYY-MM (default: this month). Others: any key.")
@with_appcontext
def run_job(name: str, dry_run: bool, period: str | None) -> None:
    """Run a scheduled job now. Exactly once per period: a period already run is a no-op, except
    a partial distribution, whose customers still without their grant are retried."""
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
        _print_preview(result)
        return
    what = {"retry": "retried", "resume": "resumed"}.get(result.attempt, "ran")
    if result.already_done:
        what = "already ran"
    click.echo(f"distribute_credits {result.period} {what}: run {result.run_id} {result.status}; "
               f"usersCount {result.users_count}, processedCount {result.processed_count}, "
               f"errorCount {result.error_count}, expiry errors {result.expiry_error_count}")
    if result.attempt == "retry" and not result.already_done:
        click.echo(f"Retry: {result.retried:,} customers without their grant taken up, "
                   f"{result.fixed:,} fixed, {result.error_count:,} still failing.")
    if result.status == "partial":
        click.echo("Some customers have no grant yet (see the run's errors on the jobs page); "
                   "run the job again for this period to retry them.")


def _print_preview(result) -> None:
    prev = result.previous
    if prev is not None:
        click.echo(f"Period {result.period} has run: run {result.run_id} {prev['status']}; "
                   f"usersCount {prev['usersCount']}, processedCount {prev['processedCount']}, "
                   f"errorCount {prev['errorCount']}, expiry errors {prev['expiryErrorCount']}.")
        if result.would == "nothing":
            click.echo("Nothing to retry: another run of this period is a no-op"
                       + (" (it is running now)." if prev["status"] == "running" else "."))
            if result.users_count:
                click.echo(f"  ({result.users_count:,} due customers have no grant for it; a "
                           "period runs once, grant them by adjustment.)")
            return
        if not result.users_count:
            click.echo(f"Nothing to retry: every due customer has the {result.period} grant.")
            return
        verb = "retried" if result.would == "retry" else "granted when the run is resumed"
        click.echo(f"A {result.would} would expire {result.expired.get('grants', 0)} due grants "
                   f"first; {result.users_count:,} customers without their grant would be {verb} "
                   f"({result.credits:,} credits).")
    else:
        click.echo(f"Dry run for {result.period}: {result.users_count} customers would receive "
                   f"{result.credits:,} credits; {result.expired.get('grants', 0)} grants due to "
                   "expire first.")
        for name, seg in result.segments.items():
            click.echo(f"  {name:<9} {seg['customers']:>8,} customers {seg['credits']:>12,} credits")
    for row in result.rows[:20]:
        click.echo(f"  #{row['customer_id']} {row['email']} {row['segment']} {row['credits']}")
    if len(result.rows) > 20 or result.rows_truncated:
        click.echo("  ...")


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
