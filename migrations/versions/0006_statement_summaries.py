"""statement_summaries: per-customer ledger sums up to an entry id (cache for the statement)

Additive: one new table of derived data (services/statement_summary.py).

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'statement_summaries',
        sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('through_entry_id', sa.BigInteger(), nullable=False),
        sa.Column('entries', sa.BigInteger(), nullable=False),
        sa.Column('sums', sa.JSON(), nullable=False),
        sa.Column('features', sa.JSON(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_statement_summaries_customer_id_customers')),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_statement_summaries')),
    )


def downgrade():
    op.drop_table('statement_summaries')
