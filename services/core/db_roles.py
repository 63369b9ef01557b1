"""The PostgreSQL login role the app runs as in production: rights on rows, nothing more.

The database owner (who runs `flask db upgrade`) creates it with
`flask --app wsgi create-db-role --name creditdesk_app`. The role may SELECT, INSERT, UPDATE and
DELETE rows and use the sequences, on today's tables and on those later migrations create.
It is not a superuser and owns nothing, so it cannot TRUNCATE, ALTER or DROP a table, drop or
disable a trigger, or set `session_replication_role` (superuser only): the ledger's immutability
triggers (migrations 0003 and 0010) then hold against the app's own credentials.
"""
from __future__ import annotations

import re
import secrets

from psycopg import sql
from sqlalchemy import Connection, text

from services.core.errors import ServiceError

NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleRefused(ServiceError):
    status, code = 409, "VALIDATION_ERROR"


def statements(name: str, password: str, database: str) -> list[sql.Composed]:
    """The SQL, in order (docs/security.md shows the same)."""
    role, db = sql.Identifier(name), sql.Identifier(database)
    return [sql.SQL(s).format(role=role, db=db, password=sql.Literal(password)) for s in (
        "ALTER ROLE {role} LOGIN PASSWORD {password} NOSUPERUSER NOCREATEDB NOCREATEROLE "
        "NOREPLICATION NOBYPASSRLS NOINHERIT",
        "GRANT CONNECT ON DATABASE {db} TO {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        # Tables and sequences the owner creates in later migrations get the same rights.
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        # The migrations' bookkeeping is the owner's alone.
        "REVOKE INSERT, UPDATE, DELETE ON TABLE alembic_version FROM {role}",
    )]


def create(conn: Connection, *, name: str, password: str | None = None) -> str:
    """Create (or reset) the app's role on the database of `conn`; answers its password.

    Run as the owner of the tables. Refuses a name that is the current user, a superuser or a
    role owning anything in this database: demoting such a role would break whoever uses it.
    """
    if conn.dialect.name != "postgresql":
        raise RoleRefused("Database roles exist on PostgreSQL only.")
    if not NAME.match(name):
        raise RoleRefused("A role name is lowercase letters, digits and underscores, up to 63.")
    password = password or secrets.token_urlsafe(24)
    me, database = conn.execute(text("SELECT current_user, current_database()")).one()
    existing = conn.execute(text(
        "SELECT r.rolsuper, (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid) "
        "FROM pg_roles r WHERE r.rolname = :n"), {"n": name}).first()
    if name == me or (existing and (existing[0] or existing[1])):
        raise RoleRefused(f"{name} is the owner, a superuser or owns tables; choose another name.")
    pg = conn.connection.driver_connection
    if existing is None:
        conn.exec_driver_sql(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)).as_string(pg))
    has_alembic = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
    for stmt in statements(name, password, database):
        rendered = stmt.as_string(pg)
        if "alembic_version" in rendered and not has_alembic:
            continue
        conn.exec_driver_sql(rendered)
    return password
