"""Statements prepared once per database session (domain/repositories/prepared.py).

On the real PostgreSQL: the first call PREPAREs, later calls only EXECUTE (the server
lists one prepared statement, and counts every call as a use of it); it survives a
rolled-back transaction; a connection that was replaced prepares afresh. Without a
database: how `:name` parameters become `$n`, and the mistakes refused up front (a
name taken by another statement, a parameter without a type or with two).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from domain.repositories.prepared import Prepared

_DOUBLES_SQL = (
    "SELECT x * :factor AS doubled, :factor AS factor"
    " FROM unnest(CAST(:values AS bigint[])) AS x ORDER BY x"
)
_DOUBLES = Prepared("settle_test_doubles", _DOUBLES_SQL, {"factor": "integer"})


def _server_side(session: Session) -> list[tuple[Any, ...]]:
    """This session's prepared statements, as the server counts them."""
    rows = session.execute(
        text(
            "SELECT name, generic_plans + custom_plans AS uses FROM pg_prepared_statements"
            " WHERE name LIKE 'settle_test_%'"
        )
    )
    return [tuple(row) for row in rows]


@pytest.fixture
def engine(services):
    engine = create_engine(services.database_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def test_the_first_call_prepares_and_the_others_only_execute(engine):
    with Session(engine) as session:
        for values in ([3, 1, 2], [5], []):
            rows = _DOUBLES.execute(session, {"values": values, "factor": 2}).all()
            assert [(r.doubled, r.factor) for r in rows] == [(2 * v, 2) for v in sorted(values)]
        assert _server_side(session) == [("settle_test_doubles", 3)]


def test_a_prepared_statement_outlives_a_rollback_and_the_checkout(engine):
    with Session(engine) as session:
        assert _DOUBLES.execute(session, {"values": [1], "factor": 3}).scalar() == 3
        session.rollback()
    with Session(engine) as session:  # the pool's one connection, checked out again
        assert _DOUBLES.execute(session, {"values": [4], "factor": 3}).scalar() == 12
        assert _server_side(session) == [("settle_test_doubles", 2)]


def test_a_replaced_connection_prepares_afresh(engine):
    with Session(engine) as session:
        _DOUBLES.execute(session, {"values": [1], "factor": 2}).all()
        session.connection().invalidate()  # as after a lost connection
    with Session(engine) as session:
        assert _DOUBLES.execute(session, {"values": [2], "factor": 2}).scalar() == 4
        assert _server_side(session) == [("settle_test_doubles", 1)]


def test_parameters_are_numbered_in_order_of_first_use():
    statement = Prepared(
        "settle_test_numbering",
        "SELECT CAST(:a AS uuid[]), :b, CAST(:a AS uuid[]), x::text FROM t WHERE y = :b",
        {"b": "timestamptz"},
    )
    assert statement.parameters == ("a", "b")
    assert statement.prepare_sql == (
        "PREPARE settle_test_numbering (uuid[], timestamptz) AS "
        "SELECT CAST($1 AS uuid[]), $2, CAST($1 AS uuid[]), x::text FROM t WHERE y = $2"
    )
    assert str(statement.execute_sql) == (
        "EXECUTE settle_test_numbering (CAST(:a AS uuid[]), CAST(:b AS timestamptz))"
    )


def test_a_name_is_one_statement():
    assert Prepared(_DOUBLES.name, _DOUBLES_SQL, {"factor": "integer"}).prepare_sql == (
        _DOUBLES.prepare_sql
    )
    with pytest.raises(ValueError, match="a different statement already has this name"):
        Prepared(_DOUBLES.name, "SELECT 1")


def test_a_parameter_without_a_type_or_with_two_is_refused():
    with pytest.raises(ValueError, match="give the type of :b"):
        Prepared("settle_test_untyped", "SELECT CAST(:a AS uuid), :b")
    with pytest.raises(ValueError, match=":a used as uuid and text"):
        Prepared("settle_test_two_types", "SELECT CAST(:a AS uuid), CAST(:a AS text)")
