"""Settle's business core: money rules, ledger models, repositories and services.

Knows nothing of HTTP or Celery; callers pass sessions in and own commits.
"""
