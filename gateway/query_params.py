"""Unknown query parameters are refused with 422, as unknown body fields are.

Without this, a misspelt `?staus=failed` or `?curser=…` would be ignored and the
caller would get an answer to a question they did not ask (every status, the
first page). One app-level dependency holds every route to the query parameters
it declares, those of its dependencies included. (Query-parameter *models* are not
expanded here: the API declares none.) A dependency that reads a family of
bracketed parameters itself (`metadata[order_id]=123`) declares the family with
`@bracketed("metadata")`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_UNKNOWN = "Unknown query parameter"
_FAMILY = "__settle_query_family__"
F = TypeVar("F", bound=Callable[..., Any])


def bracketed(family: str) -> Callable[[F], F]:
    """Marks a dependency that reads every `family[...]` query parameter itself."""

    def mark(dependency: F) -> F:
        setattr(dependency, _FAMILY, family)
        return dependency

    return mark


def family_of(name: str) -> tuple[str, str] | None:
    """`metadata[order_id]` → ("metadata", "order_id"); None for any other shape."""
    match = re.fullmatch(r"([a-z_]+)\[([^\[\]]*)\]", name)
    return (match[1], match[2]) if match else None


def _declared(dependant: Dependant) -> Iterator[str]:
    for field in dependant.query_params:
        yield field.alias
    family = getattr(dependant.call, _FAMILY, None)
    if family is not None:
        yield f"{family}[]"
    for dependency in dependant.dependencies:
        yield from _declared(dependency)


def _known(name: str, declared: set[str]) -> bool:
    if name in declared:
        return True
    family = family_of(name)
    return family is not None and f"{family[0]}[]" in declared


async def reject_unknown_query_parameters(request: Request) -> None:
    """An app dependency (async: no thread hop on the hot path). The walk over the
    route's few dependencies costs less than caching it would complicate."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = set(_declared(route.dependant))
    unknown = [
        name for name in dict.fromkeys(request.query_params.keys()) if not _known(name, declared)
    ]
    if unknown:
        # The shape pydantic gives an unknown body field, so both read the same.
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": _UNKNOWN, "type": "extra_forbidden"}
                for name in unknown
            ]
        )
