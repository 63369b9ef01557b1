"""balance notices: low-balance threshold overrides (plan, customer), grant expiry-notice marker

Additive, nullable columns: NULL threshold = use the next level (customer > plan > setting);
credit_grants.expiry_notice_at is set once when grant.expiring is written (credit_grants is not
under the immutability triggers of 0003/0010, only ledger entries and allocations are).

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('customers', sa.Column('low_balance_threshold', sa.BigInteger(), nullable=True))
    op.add_column('plans', sa.Column('low_balance_threshold', sa.BigInteger(), nullable=True))
    op.add_column('credit_grants', sa.Column('expiry_notice_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('credit_grants') as t:
        t.drop_column('expiry_notice_at')
    with op.batch_alter_table('plans') as t:
        t.drop_column('low_balance_threshold')
    with op.batch_alter_table('customers') as t:
        t.drop_column('low_balance_threshold')
