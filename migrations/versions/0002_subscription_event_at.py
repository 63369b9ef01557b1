"""customers.subscription_event_at: provider time of the last subscription state applied

Subscription webhooks can arrive out of order; an event older than the state already applied
is ignored, so the customer ends in the same plan status whatever the delivery order.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('subscription_event_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('subscription_event_at')
