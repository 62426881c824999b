"""Request and response bodies of the HTTP API (pydantic). Requests reject unknown fields."""
