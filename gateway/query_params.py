"""Unknown query parameters are refused with 422, as unknown body fields are.

Without this, a misspelt `?staus=failed` or `?curser=…` would be ignored and the
caller would get an answer to a question they did not ask (every status, the
first page). One app-level dependency holds every route to the query parameters
it declares, those of its dependencies included. (Query-parameter *models* are not
expanded here: the API declares none.)
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_UNKNOWN = "Unknown query parameter"


def _declared(dependant: Dependant) -> Iterator[str]:
    for field in dependant.query_params:
        yield field.alias
    for dependency in dependant.dependencies:
        yield from _declared(dependency)


async def reject_unknown_query_parameters(request: Request) -> None:
    """An app dependency (async: no thread hop on the hot path). The walk over the
    route's few dependencies costs less than caching it would complicate."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = set(_declared(route.dependant))
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in declared]
    if unknown:
        # The shape pydantic gives an unknown body field, so both read the same.
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": _UNKNOWN, "type": "extra_forbidden"}
                for name in unknown
            ]
        )
