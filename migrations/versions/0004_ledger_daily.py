"""ledger_daily rollups for analytics, and how far they are complete

Derived data only (rebuilt from allocations by services.ledger.rollup); additive.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'ledger_daily',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('feature', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('credits', sa.BigInteger(), nullable=False),
        sa.Column('value_micros', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'kind', 'feature', 'source', 'currency',
                                name=op.f('pk_ledger_daily')),
    )
    op.create_table(
        'ledger_rollup_state',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('rolled_through', sa.Date(), nullable=True),
        sa.Column('max_entry_id', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_rollup_state')),
    )


def downgrade():
    op.drop_table('ledger_rollup_state')
    op.drop_table('ledger_daily')
