"""prompt_cache: cached answers of the metered chat endpoint, with hit counts

Additive: one new table (services/chat.py).

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'prompt_cache',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('model', sa.String(length=128), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('finish_reason', sa.String(length=32), nullable=True),
        sa.Column('usage', sa.JSON(), nullable=True),
        sa.Column('credits', sa.BigInteger(), nullable=False),
        sa.Column('hits', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('last_hit_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_cache')),
        sa.UniqueConstraint('key', name=op.f('uq_prompt_cache_key')),
    )
    with op.batch_alter_table('prompt_cache', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompt_cache_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('prompt_cache', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompt_cache_expires_at'))
    op.drop_table('prompt_cache')
