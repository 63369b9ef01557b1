"""auto_topups and auto_topup_attempts: a customer's auto top-up and each charge it makes

Additive.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table(
        'auto_topups',
        sa.Column('id', BigId, nullable=False),
        sa.Column('customer_id', BigId, nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('threshold', sa.BigInteger(), nullable=False),
        sa.Column('package_id', BigId, nullable=False),
        sa.Column('monthly_limit', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('paused_at', sa.DateTime(), nullable=True),
        sa.Column('stripe_customer_id', sa.String(128), nullable=True),
        sa.Column('payment_method_id', sa.String(128), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name='fk_auto_topups_customer_id_customers'),
        sa.ForeignKeyConstraint(['package_id'], ['credit_packages.id'],
                                name='fk_auto_topups_package_id_credit_packages'),
        sa.PrimaryKeyConstraint('id', name='pk_auto_topups'),
        sa.UniqueConstraint('customer_id', name='uq_auto_topups_customer_id'),
    )
    op.create_table(
        'auto_topup_attempts',
        sa.Column('id', BigId, nullable=False),
        sa.Column('customer_id', BigId, nullable=False),
        sa.Column('package_id', BigId, nullable=False),
        sa.Column('key', sa.String(128), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('balance_at_trigger', sa.BigInteger(), nullable=False),
        sa.Column('provider_ref', sa.String(128), nullable=True),
        sa.Column('payment_id', BigId, nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name='fk_auto_topup_attempts_customer_id_customers'),
        sa.ForeignKeyConstraint(['package_id'], ['credit_packages.id'],
                                name='fk_auto_topup_attempts_package_id_credit_packages'),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'],
                                name='fk_auto_topup_attempts_payment_id_payments'),
        sa.PrimaryKeyConstraint('id', name='pk_auto_topup_attempts'),
        sa.UniqueConstraint('key', name='uq_auto_topup_attempts_key'),
    )
    op.create_index('ix_auto_topup_attempts_customer', 'auto_topup_attempts',
                    ['customer_id', 'created_at'])
    op.create_index('ix_auto_topup_attempts_status', 'auto_topup_attempts', ['status', 'id'])


def downgrade():
    op.drop_table('auto_topup_attempts')
    op.drop_table('auto_topups')
