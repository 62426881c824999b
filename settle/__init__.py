"""Shared process plumbing: settings, broker wiring, the `settle` CLI and the embedded dev servers."""
