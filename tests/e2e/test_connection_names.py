"""A real worker with embedded beat names its Redis broker connections per process
(`settle-celery-<pid>` in CLIENT LIST), so a count that grows says whose pool it is."""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from tests.processes import running_worker, settings_env
from tests.services import client_names

pytestmark = pytest.mark.e2e


def _celery_pids(redis_client: Any) -> set[int]:
    return {
        int(name.rsplit("-", 1)[1])
        for name in client_names(redis_client)
        if name.startswith("settle-celery-")
    }


def test_worker_and_beat_name_their_broker_connections(isolated, redis_client):
    on_redis = isolated.model_copy(update={"broker_url": ""})  # names are CLIENT LIST's
    with running_worker(settings_env(on_redis), concurrency=1, beat=True) as worker:
        main = worker.popen.pid
        deadline = time.monotonic() + 20
        while True:
            children = {p.pid for p in psutil.Process(main).children(recursive=True)}
            named = _celery_pids(redis_client)
            # The consumer's connections, and beat's (a child: it sends at once).
            if main in named and named & children:
                break
            assert time.monotonic() < deadline, f"named {named}, worker {main}, {children}"
            time.sleep(0.2)
