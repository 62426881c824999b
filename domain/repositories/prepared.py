"""Statements PREPAREd once per database session: parsed and planned once, not per call.

psycopg2 sends every statement as text with its values inlined, so PostgreSQL parses
and plans it on every call. For the engine's set-based statements that planning cost
more than running them at moderate load: in the bench's latency scenario (batches of
3-4 transfers) planning was 34 % of the engine's PostgreSQL time, and the lane read
took 0.55 ms to plan against 0.18 ms to run (`pg_stat_statements`, `track_planning`).

A `Prepared` statement is written like any other (`CAST(:name AS type)`, or a bare
`:name` whose type is given), and is sent as `PREPARE name(types) AS ...` the first
time a DBAPI connection runs it, then as `EXECUTE name(...)`. Which connections have
prepared what is kept in the pool's per-connection `info`, which follows the DBAPI
connection and is gone with it, so a reconnected session prepares afresh. A prepared
statement survives a rollback (PREPARE is not transactional) and PostgreSQL replans
it by itself when a table it reads changes shape. Names are one namespace per session:
a second statement under a name already taken is refused when it is defined (else the
connections that prepared the first would silently run it in its place).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Result, text
from sqlalchemy.orm import Session

_PARAMETER = re.compile(r"CAST\(:(\w+) AS ([^)]+)\)|(?<![:\w]):(\w+)")
_PREPARED_KEY = "settle_prepared_statements"
_DEFINED: dict[str, str] = {}  # name → the PREPARE it stands for, for this process


class Prepared:
    """One constant statement, prepared per connection under `name`."""

    def __init__(self, name: str, sql: str, types: Mapping[str, str] | None = None) -> None:
        types = dict(types or {})
        order: dict[str, str] = {}  # parameter → its SQL type, in order of first use

        def number(match: re.Match[str]) -> str:
            cast_name, cast_type, bare = match.groups()
            parameter = cast_name or bare
            kind = cast_type.strip() if cast_name else types.get(parameter)
            if kind is None:
                raise ValueError(f"{name}: give the type of :{parameter}")
            if order.setdefault(parameter, kind) != kind:
                raise ValueError(f"{name}: :{parameter} used as {order[parameter]} and {kind}")
            position = f"${list(order).index(parameter) + 1}"
            return f"CAST({position} AS {kind})" if cast_name else position

        body = _PARAMETER.sub(number, sql)
        self.name = name
        self.parameters = tuple(order)
        self.prepare_sql = f"PREPARE {name} ({', '.join(order.values())}) AS {body}"
        if _DEFINED.setdefault(name, self.prepare_sql) != self.prepare_sql:
            raise ValueError(f"{name}: a different statement already has this name")
        arguments = ", ".join(f"CAST(:{p} AS {kind})" for p, kind in order.items())
        self.execute_sql = text(f"EXECUTE {name} ({arguments})")

    def execute(self, session: Session, parameters: Mapping[str, Any]) -> Result[Any]:
        connection = session.connection()
        prepared: set[str] = connection.connection.info.setdefault(_PREPARED_KEY, set())
        if self.name not in prepared:
            connection.exec_driver_sql(self.prepare_sql)
            prepared.add(self.name)
        return session.execute(self.execute_sql, {p: parameters[p] for p in self.parameters})
