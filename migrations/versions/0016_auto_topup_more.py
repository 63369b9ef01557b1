"""auto_topups: the saved card's brand and last 4 digits, shown on the customer page

Additive.

Revision ID: 0016
Revises: 0015
"""
from alembic import op
import sqlalchemy as sa

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('auto_topups') as batch:
        batch.add_column(sa.Column('card_brand', sa.String(32), nullable=True))
        batch.add_column(sa.Column('card_last4', sa.String(4), nullable=True))


def downgrade():
    with op.batch_alter_table('auto_topups') as batch:
        batch.drop_column('card_last4')
        batch.drop_column('card_brand')
