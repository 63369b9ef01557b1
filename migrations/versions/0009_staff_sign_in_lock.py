"""staff sign-in lock: failed_logins, first_failed_at, locked_until

Failed sign-ins are counted on the staff row, shared by every process, with one conditional
UPDATE per attempt (services/staff.py). Additive; existing rows start unlocked with no failure.

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('staff') as batch:
        batch.add_column(sa.Column('failed_logins', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('first_failed_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('locked_until', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('staff') as batch:
        batch.drop_column('locked_until')
        batch.drop_column('first_failed_at')
        batch.drop_column('failed_logins')
