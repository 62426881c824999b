"""Shared process plumbing: settings, broker wiring, the `settle` CLI, embedded dev servers."""
