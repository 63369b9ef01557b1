"""tasks.usage_credits: the usage a completion reported, next to the capped charge

Additive and nullable: rows settled before it keep NULL (their usage was not recorded).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('usage_credits', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('usage_credits')
