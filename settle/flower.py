"""Flower with all of it behind its basic authentication: `python -m settle.flower ARGS`
runs `celery -A workers.celery_app ARGS` (ARGS: `flower --address=... --port=...`).

Flower's basic auth (FLOWER_BASIC_AUTH, read from the environment so the password
never shows in `ps`) only guards the handlers that ask for it: `/metrics` and
`/healthcheck` answer anyone (Flower 2.x; mher/flower#1342). Flower has no option
for that, so before it starts, every one of its request handlers gets a `prepare`
step that checks the credentials first (Flower's own check, `get_current_user`,
which answers 401 with `WWW-Authenticate: Basic`). Only the static assets (the
JavaScript and CSS Flower ships, no data) stay public.
tests/integration/test_flower_auth.py starts Flower this way and asks each path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from settle.processes import CELERY_APP


def _guarded(prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def prepare_with_auth(handler: Any) -> Any:
        if handler.application.options.basic_auth:
            handler.get_current_user()  # raises HTTPError(401) without valid credentials
        return prepare(handler)

    prepare_with_auth.settle_guarded = True  # type: ignore[attr-defined]
    return prepare_with_auth


def require_authentication() -> list[type]:
    """Guard every Flower handler class; the classes guarded."""
    from flower import urls
    from flower.views import BaseHandler

    guarded: list[type] = []
    for spec in urls.handlers:
        handler: Any = spec.handler_class if hasattr(spec, "handler_class") else spec[1]
        if not (isinstance(handler, type) and issubclass(handler, BaseHandler)):
            continue
        target: Any = handler  # a Flower handler class
        if getattr(target.prepare, "settle_guarded", False):
            continue
        target.prepare = _guarded(target.prepare)
        guarded.append(target)
    return guarded


def main(args: list[str]) -> None:
    require_authentication()
    from celery.bin.celery import main as celery_main

    from workers.celery_app import name_broker_connections

    name_broker_connections("flower")  # its broker connections: settle-flower-<pid>

    sys.argv = ["celery", "-A", CELERY_APP, *args]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
