"""conversations.client_id: client-chosen session ids, unique per tenant and principal

Clients may name a session with any 1-128 characters of ``[A-Za-z0-9._:-]`` instead of a UUID.
``conversations.id`` stays the internal UUID key; the client's id goes to ``client_id``, unique
per (tenant_id, principal_id), so two principals using the same id get separate conversations.
Existing conversations keep answering to the UUID they were started with: ``client_id = id``.

Downgrade drops the column: conversations started with a non-UUID id stay in the table but are
reachable only by their internal UUID afterwards.

Revision ID: 0004_conversation_client_id
Revises: 0003_corpus_version
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004_conversation_client_id"
down_revision: str | None = "0003_corpus_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("client_id", sa.String(length=128), nullable=True))
    op.execute("UPDATE conversations SET client_id = id::text WHERE client_id IS NULL")
    op.alter_column("conversations", "client_id", existing_type=sa.String(length=128), nullable=False)
    op.create_unique_constraint(
        op.f("uq_conversations_tenant_id_principal_id_client_id"),
        "conversations",
        ["tenant_id", "principal_id", "client_id"],
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_conversations_tenant_id_principal_id_client_id"), "conversations", type_="unique"
    )
    op.drop_column("conversations", "client_id")
