"""Reporting: one rich Console for stderr, progress bars, tables, CSV/JSON for pipes."""
