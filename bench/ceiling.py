"""The yardstick: what this PostgreSQL does with the same ledger writes and nothing else.

One stored-procedure call per transfer, from CONNECTIONS client connections, against
Settle's own schema with every trigger on (append-only entries, the deferred balance
and sequence checks): lock both accounts in id order, insert the transfer and its two
entries, update both balances. No HTTP, broker, idempotency record, audit or event.
Measured in the same run, on the same server, as the end-to-end figures, so their
ratio means something even on a noisy machine.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from bench.observer import connect

CONNECTIONS = 4

FUNCTION = """
CREATE OR REPLACE FUNCTION bench_transfer(
    p_source uuid, p_destination uuid, p_amount bigint, p_initiator uuid
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := gen_random_uuid();
    v_currency text;
    v_source_balance bigint;
    v_source_sequence bigint;
    v_destination_balance bigint;
    v_destination_sequence bigint;
BEGIN
    -- Both rows locked in ascending id order, as the engine does: no deadlocks.
    PERFORM 1 FROM accounts WHERE id IN (p_source, p_destination) ORDER BY id
        FOR NO KEY UPDATE;
    SELECT balance, last_sequence, currency
      INTO v_source_balance, v_source_sequence, v_currency
      FROM accounts WHERE id = p_source;
    SELECT balance, last_sequence INTO v_destination_balance, v_destination_sequence
      FROM accounts WHERE id = p_destination;
    INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                           amount, currency, initiated_by, completed_at, lane)
    VALUES (v_id, 'transfer', 'succeeded', p_source, p_destination,
            p_amount, v_currency, p_initiator, now(), settle_lane(p_source));
    INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                balance_before, balance_after, sequence)
    VALUES (v_id, p_source, -p_amount, v_currency, v_source_balance,
            v_source_balance - p_amount, v_source_sequence + 1),
           (v_id, p_destination, p_amount, v_currency, v_destination_balance,
            v_destination_balance + p_amount, v_destination_sequence + 1);
    UPDATE accounts SET balance = balance - p_amount, last_sequence = last_sequence + 1
     WHERE id = p_source;
    UPDATE accounts SET balance = balance + p_amount, last_sequence = last_sequence + 1
     WHERE id = p_destination;
    RETURN v_id;
END $$;
"""


@dataclass
class CeilingResult:
    transfers: int
    seconds: float
    connections: int

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0


def install(database_url: str) -> None:
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(FUNCTION)
    finally:
        conn.close()


def run(
    database_url: str,
    account_ids: list[str],
    initiator_id: str,
    *,
    seconds: float,
    connections: int = CONNECTIONS,
    seed: int = 7,
) -> CeilingResult:
    """Each connection calls bench_transfer on uniform random pairs until `seconds` pass;
    every call is its own transaction (autocommit), as one transfer per commit."""
    install(database_url)
    counts = [0] * connections
    errors: list[BaseException] = []
    # A client that fails to connect breaks the barrier instead of hanging the others.
    start = threading.Barrier(connections + 1, timeout=60)

    def client(index: int) -> None:
        rng = random.Random(seed + index)
        conn = connect(database_url)
        try:
            with conn.cursor() as cur:
                start.wait()
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    source, destination = rng.sample(account_ids, 2)
                    cur.execute(
                        "SELECT bench_transfer(%s, %s, 1, %s)", (source, destination, initiator_id)
                    )
                    counts[index] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(i,), name=f"bench-ceiling-{i}", daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    if errors:
        raise RuntimeError(f"direct-SQL ceiling failed: {errors[0]!r}")
    return CeilingResult(transfers=sum(counts), seconds=elapsed, connections=connections)
