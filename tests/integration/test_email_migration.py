"""Migration 0006 brings stored emails to the one normal form (issue 10, finding 1).

Emails registered before were only trimmed and lower-cased; looked up by their
normal form they would not be found. A normal form that another user already
holds is left alone rather than breaking the migration.
"""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from domain.migrate import upgrade
from domain.services.users import normalise_email
from settle.harness import execute_as_admin


def test_stored_emails_are_normalised_once(services):
    server_url = services.server_url
    name = f"settle_mig_{secrets.token_hex(4)}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    execute_as_admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        upgrade(url, "0004")
        legacy = {
            "straße@example.com": "strasse@example.com",
            "\uff46\uff55\uff4c\uff4c@example.com": "full@example.com",
            "plain@example.com": "plain@example.com",
            "taken@example.com": "taken@example.com",
            "taken@example.com\u00a0": "taken@example.com\u00a0",  # collides: left alone
        }
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                for email in legacy:
                    conn.execute(
                        text(
                            "INSERT INTO users (id, email, password_hash, role)"
                            " VALUES (:id, :email, 'x', 'customer')"
                        ),
                        {"id": uuid.uuid4(), "email": email},
                    )
            upgrade(url, "0006")
            with engine.connect() as conn:
                stored = set(conn.scalars(text("SELECT email FROM users")))
        finally:
            engine.dispose()
        assert stored == set(legacy.values())
        assert normalise_email("STRASSE@example.com ") in stored
    finally:
        execute_as_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
