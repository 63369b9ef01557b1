"""api_keys.rate_limit: a key's own rate limit (NULL: not throttled; docs/api.md "Rate limits")

Additive: one nullable column.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('rate_limit', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('rate_limit')
