"""The HTTP gateway: authentication, request schemas, routes and error mapping (FastAPI)."""
