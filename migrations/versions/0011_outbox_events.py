"""outbox_events: outbound events written with the change that causes them

Additive. The delivery side (endpoints, deliveries, attempts) comes in its own revision.

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table(
        'outbox_events',
        sa.Column('id', BigId, primary_key=True),
        sa.Column('event_id', sa.String(40), nullable=False),
        sa.Column('type', sa.String(40), nullable=False),
        sa.Column('customer_id', BigId, sa.ForeignKey('customers.id',
                  name='fk_outbox_events_customer_id_customers'), nullable=True),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('dispatched_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_outbox_events'),
        sa.UniqueConstraint('event_id', name='uq_outbox_events_event_id'),
    )
    op.create_index('ix_outbox_events_undispatched', 'outbox_events', ['dispatched_at', 'id'])
    op.create_index('ix_outbox_events_customer', 'outbox_events', ['customer_id', 'id'])


def downgrade():
    op.drop_index('ix_outbox_events_customer', 'outbox_events')
    op.drop_index('ix_outbox_events_undispatched', 'outbox_events')
    op.drop_table('outbox_events')
