"""Provider-backed task execution (seed 003): providers, handlers, the registry and the loops.

- providers.py: talk to third-party AI APIs only (sync `run`, async `submit`/`query`), with the
  OpenAI-compatible HTTP adapter configured by AI_PROVIDERS (primary, then fallback);
- handlers.py: the business effects of a finished call (settlement through services.tasks.prepaid,
  outputs, task logs);
- registry.py: task type -> provider classes + handler, in one place;
- metering.py: usage -> credits from the feature price table;
- loops.py: the main loop and the async query loop (jobs/runner_jobs.py schedules them).

How to add a task type: docs/tasks.md.
"""
