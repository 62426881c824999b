"""Celery side of Settle: the app, its configuration, and thin tasks that call domain services."""
