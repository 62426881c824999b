"""Applies the Alembic migrations shipped inside the `domain` package, as the owner role."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url

from domain import db_roles

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-backed: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def migrate(*, owner_url: str, app_url: str) -> list[str]:
    """Upgrades as the owner, grants the app role its privileges, checks the app role.

    Returns warnings: tables with no grant policy, and whatever makes the app role more
    than an app role (a superuser, the owner, ...). With one URL for both (a
    single-role setup) the grants are skipped and the app role is the owner.
    """
    upgrade(owner_url)
    warnings = []
    app_role = make_url(app_url).username or ""
    owner_role = make_url(owner_url).username or ""
    engine = create_engine(owner_url)
    try:
        if app_role and app_role != owner_role:
            with engine.begin() as conn:
                ungranted = db_roles.grant_app_role(conn, app_role)
            warnings += [f"table {t} has no grant policy (domain/db_roles.py)" for t in ungranted]
    finally:
        engine.dispose()
    app_engine = create_engine(app_url)
    try:
        with app_engine.connect() as conn:
            warnings += db_roles.app_role_problems(conn)
    finally:
        app_engine.dispose()
    return warnings
