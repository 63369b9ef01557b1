"""creditdesk_api_debit(): the API's single debit as one PostgreSQL statement

The everyday API debit (services/ledger/sqldebit.py) in one round trip: the price, the
account's row lock and credits, the live buckets read under that lock, the entry, the bucket
draws, the allocations and the stored reply. Anything it does not handle itself it
refuses with SQLSTATE CDF01 before committing anything (the statement is its own transaction), and
the caller runs the Python path, which decides and explains: a key already claimed or used, an
unknown customer, a short balance, an unpriced feature, a bucket past its expiry, a balance that
ends below a notice or auto top-up threshold. tests/ledger/test_sql_debit.py proves (Hypothesis,
random histories with expiries) that it writes the rows services.ledger.posting writes.

PostgreSQL only; nothing on SQLite.

Revision ID: 0017
Revises: 0016
"""
from alembic import op

from models.functions import API_DEBIT_DROP, ddl

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    for stmt in ddl(op.get_bind().dialect.name):
        op.execute(stmt)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(API_DEBIT_DROP)
