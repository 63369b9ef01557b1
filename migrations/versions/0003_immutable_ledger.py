"""ledger entries and allocations refuse UPDATE and DELETE

Revision ID: 0003
Revises: 0002
"""
from alembic import op

from models.ledger import IMMUTABLE_TABLES, immutability_ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    dialect = op.get_bind().dialect.name
    for table in IMMUTABLE_TABLES:
        for stmt in immutability_ddl(dialect, table):
            op.execute(stmt)


def downgrade():
    dialect = op.get_bind().dialect.name
    for table in IMMUTABLE_TABLES:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        elif dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
