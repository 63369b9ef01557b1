"""credit_packages.pricing and discount_bp: a package priced at the price per credit

`pricing` is 'fixed' (sold at price_minor) or 'per_credit' (credits x the price per credit of
the package's currency, less discount_bp basis points, computed at checkout). Existing
packages stay fixed. Additive.

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('credit_packages') as batch:
        batch.add_column(sa.Column('pricing', sa.String(16), nullable=False,
                                   server_default='fixed'))
        batch.add_column(sa.Column('discount_bp', sa.Integer(), nullable=False,
                                   server_default='0'))


def downgrade():
    with op.batch_alter_table('credit_packages') as batch:
        batch.drop_column('discount_bp')
        batch.drop_column('pricing')
