"""Prepaid tasks (charge the estimate, settle exactly once), their lists, the metered chat, and
the runner that calls AI providers for queued tasks (runner/).

Owns: tasks, task logs, the prompt cache.
May use: core, ledger, catalog.
"""
