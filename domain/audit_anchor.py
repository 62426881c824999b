"""Signed checkpoints of the audit chain, kept outside the database.

A checkpoint says "the chain had a link `chain_seq` with hash `hash` at `at`", with
an HMAC under the audit key. `settle verify` (and the periodic verify task) appends
one, to a JSON-lines file (SETTLE_AUDIT_CHECKPOINT_PATH), each time the chain checks
out and has grown. A later verify checks the chain against every checkpoint: a chain
shorter than a checkpoint, or another hash at a checkpoint's seq, fails and says so.
Someone who can rewrite the database but not this file (or the key) cannot hide that
the chain was cut or rewritten before the latest checkpoint.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    chain_seq: int
    hash: str
    at: str  # ISO 8601, UTC
    key_id: str
    mac: str = ""

    def message(self) -> bytes:
        return json.dumps(
            {"seq": self.chain_seq, "hash": self.hash, "at": self.at, "kid": self.key_id},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


Mac = Callable[[str, bytes], str]


@dataclass(frozen=True)
class CheckpointFile:
    """Append-only JSON lines; each line one checkpoint. Missing file: no checkpoints."""

    path: Path

    def read(self) -> tuple[list[Checkpoint], list[dict[str, Any]]]:
        """The well-formed checkpoints, and a problem for each line that is not one."""
        checkpoints: list[Checkpoint] = []
        problems: list[dict[str, Any]] = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return checkpoints, problems
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                checkpoints.append(
                    Checkpoint(
                        chain_seq=int(raw["chain_seq"]),
                        hash=str(raw["hash"]),
                        at=str(raw["at"]),
                        key_id=str(raw["key_id"]),
                        mac=str(raw["mac"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                problems.append({"checkpoint_line": number, "error": "not a checkpoint"})
        return checkpoints, problems

    def append(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {
                "chain_seq": checkpoint.chain_seq,
                "hash": checkpoint.hash,
                "at": checkpoint.at,
                "key_id": checkpoint.key_id,
                "mac": checkpoint.mac,
            },
            separators=(",", ":"),
        )
        # O_APPEND: concurrent writers each add whole lines (a line is far below PIPE_BUF).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def signed(checkpoint: Checkpoint, mac: Mac) -> Checkpoint:
    return Checkpoint(
        chain_seq=checkpoint.chain_seq,
        hash=checkpoint.hash,
        at=checkpoint.at,
        key_id=checkpoint.key_id,
        mac=mac(checkpoint.key_id, checkpoint.message()),
    )


def authentic(checkpoint: Checkpoint, mac: Mac) -> bool:
    return hmac.compare_digest(mac(checkpoint.key_id, checkpoint.message()), checkpoint.mac)
