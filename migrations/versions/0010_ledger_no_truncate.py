"""ledger entries and allocations refuse TRUNCATE (PostgreSQL)

The row triggers of 0003 refuse UPDATE and DELETE but never see TRUNCATE. SQLite has no
TRUNCATE statement (`DELETE FROM t` fires 0003's row triggers), so this is a no-op there.

Revision ID: 0010
Revises: 0009
"""
from alembic import op

from models.ledger import IMMUTABLE_TABLES, truncate_guard_ddl

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    dialect = op.get_bind().dialect.name
    for table in IMMUTABLE_TABLES:
        for stmt in truncate_guard_ddl(dialect, table):
            op.execute(stmt)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
