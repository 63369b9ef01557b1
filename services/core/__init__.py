"""What every domain uses: the one place that commits (db.atomic, locks per database),
typed errors with their HTTP status and API code (errors), the request context (context), the
audit trail and its reader (audit, auditlog), the typed business settings with their history
(settings), formula-safe CSV (csvsafe), money in minor units (money: a currency's decimals
from Babel, ISO 4217 where they differ) and keyset paging for lists (paging).

Owns: transactions, errors, settings, the audit log.
May use: models only.
"""
