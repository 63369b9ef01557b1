"""Ledger invariants, checked set-based so that a million entries take seconds, not hours.

- account.balance = sum(entries) = sum(remaining of its grants), per account;
- every entry's amount is fully allocated to grants, and every grant's remaining equals the sum
  of the allocations through it;
- each entry's balance_before is the previous entry's balance_after (no hole, no edit);
- an idempotency key and a provider payment maps to at most one ledger transaction;
- a balance below zero only where an explicit overdraw left a deficit bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from models import db

SAMPLE = 20


@dataclass
class Check:
    name: str
    description: str
    violations: int = 0
    samples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass
class Report:
    checks: list[Check]
    accounts: int = 0
    entries: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.checks)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "accounts": self.accounts, "entries": self.entries,
                "checks": [{"name": c.name, "ok": c.ok, "violations": c.violations,
                            "samples": c.samples} for c in self.checks]}

    def lines(self) -> list[str]:
        out = [f"Reconciled {self.accounts:,} accounts and {self.entries:,} ledger entries."]
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            out.append(f"  [{mark}] {c.description}" + ("" if c.ok else f": {c.violations:,}"))
            for sample in c.samples:
                out.append("         " + ", ".join(f"{k}={v}" for k, v in sample.items()))
        out.append("Ledger is consistent." if self.ok else f"{self.violations:,} violation(s).")
        return out


CHECKS: list[tuple[str, str, str]] = [
    ("balance_vs_entries", "account balance = sum of its ledger entries", """
        SELECT a.id AS account_id, a.balance AS balance, COALESCE(e.total, 0) AS entries
        FROM accounts a LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger_entries
                                   GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.balance <> COALESCE(e.total, 0)"""),
    ("balance_vs_grants", "account balance = sum of remaining credits in its grants", """
        SELECT a.id AS account_id, a.balance AS balance, COALESCE(g.total, 0) AS grants
        FROM accounts a LEFT JOIN (SELECT account_id, SUM(remaining) AS total FROM credit_grants
                                   GROUP BY account_id) g ON g.account_id = a.id
        WHERE a.balance <> COALESCE(g.total, 0)"""),
    ("entry_allocations", "every entry's amount is allocated to grants", """
        SELECT e.id AS entry_id, e.amount AS amount, COALESCE(x.total, 0) AS allocated
        FROM ledger_entries e LEFT JOIN (SELECT entry_id, SUM(credits) AS total FROM allocations
                                         GROUP BY entry_id) x ON x.entry_id = e.id
        WHERE e.amount <> COALESCE(x.total, 0)"""),
    ("grant_allocations", "every grant's remaining = sum of the allocations through it", """
        SELECT g.id AS grant_id, g.remaining AS remaining, COALESCE(x.total, 0) AS allocated
        FROM credit_grants g LEFT JOIN (SELECT grant_id, SUM(credits) AS total FROM allocations
                                        GROUP BY grant_id) x ON x.grant_id = g.id
        WHERE g.remaining <> COALESCE(x.total, 0)"""),
    ("balance_chain", "each entry starts where the account's previous entry ended", """
        SELECT id AS entry_id, account_id, balance_before, prev_after FROM (
          SELECT id, account_id, balance_before, balance_after, amount,
                 LAG(balance_after) OVER (PARTITION BY account_id ORDER BY id) AS prev_after
          FROM ledger_entries) t
        WHERE balance_after <> balance_before + amount
           OR (prev_after IS NULL AND balance_before <> 0)
           OR (prev_after IS NOT NULL AND balance_before <> prev_after)"""),
    ("negative_balance", "no balance below zero without an explicit overdraw", """
        SELECT a.id AS account_id, a.balance AS balance FROM accounts a
        WHERE a.balance < 0 AND NOT EXISTS (SELECT 1 FROM credit_grants g
              WHERE g.account_id = a.id AND g.source = 'deficit' AND g.remaining < 0)"""),
    ("idempotency_keys", "each idempotency key maps to one ledger entry", """
        SELECT idempotency_key AS key, COUNT(*) AS entries FROM ledger_entries
        WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING COUNT(*) > 1"""),
    ("payment_grants", "each provider payment credited at most once", """
        SELECT p.id AS payment_id, p.provider AS provider,
               p.provider_payment_id AS provider_payment_id, COUNT(e.id) AS grants
        FROM payments p JOIN ledger_entries e ON e.payment_id = p.id AND e.type = 'grant'
        GROUP BY p.id, p.provider, p.provider_payment_id HAVING COUNT(e.id) > 1"""),
]


def run() -> Report:
    """Run every check; read-only."""
    s = db.session
    checks = []
    for name, description, sql in CHECKS:
        rows = s.execute(text(sql)).mappings().all()
        checks.append(Check(name, description, len(rows), [dict(r) for r in rows[:SAMPLE]]))
    report = Report(checks)
    report.accounts = s.execute(text("SELECT COUNT(*) FROM accounts")).scalar_one()
    report.entries = s.execute(text("SELECT COUNT(*) FROM ledger_entries")).scalar_one()
    s.rollback()
    return report
