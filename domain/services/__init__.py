"""Use cases. Services take a session and keyword-only arguments, flush, and never commit."""
