"""The one place that says how each task type runs: its provider(s) and its handler.

A task type is the task's `type` (also its feature in the price table). `chat:gpt-4o` belongs
to the `chat` family: same providers and handler, its own price row when there is one. Adding a
type is a provider class, a handler and a price row (docs/tasks.md):

    register("lip-sync", handler=LipSyncHandler(), async_=LipSyncProvider)
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from services.tasks.runner import providers as p
from services.tasks.runner.handlers import ChatHandler, Handler, ImageHandler, VideoHandler


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Handler
    sync: type[p.SyncProvider] | None = None
    async_: type[p.AsyncProvider] | None = None

    def provider_class(self, mode: str) -> type[p.Provider] | None:
        return self.sync if mode == "sync" else self.async_

    def chain(self, mode: str) -> list[p.Provider]:
        """One provider per configured endpoint, in fallback order (primary first)."""
        cls = self.provider_class(mode)
        return [cls(e) for e in p.endpoints()] if cls else []

    def provider_named(self, mode: str, name: str | None) -> p.Provider | None:
        """The provider on the endpoint that took a job (async polling goes back to it)."""
        cls = self.provider_class(mode)
        for e in p.endpoints():
            if cls and e.name == name:
                return cls(e)
        return None


_REGISTRY: dict[str, TaskType] = {}


def register(name: str, *, handler: Handler, sync: type[p.SyncProvider] | None = None,
             async_: type[p.AsyncProvider] | None = None) -> TaskType:
    """Register (or replace) a task type; it needs a sync or an async provider, or both."""
    if sync is None and async_ is None:
        raise ValueError(f"task type {name!r} needs a sync or an async provider")
    _REGISTRY[name] = TaskType(name, handler, sync, async_)
    return _REGISTRY[name]


def lookup(task_type: str) -> TaskType | None:
    """The registration of a task type, or of its family (`chat` for `chat:gpt-4o`)."""
    return _REGISTRY.get(task_type) or _REGISTRY.get(task_type.split(":", 1)[0])


def registered() -> list[str]:
    return sorted(_REGISTRY)


def active_types() -> list[str]:
    """The types the loops execute: registered, listed in AI_RUNNER_TYPES (all when empty), and
    only while at least one provider endpoint is configured."""
    if not p.endpoints():
        return []
    wanted = current_app.config.get("AI_RUNNER_TYPES") or ""
    if isinstance(wanted, str):
        wanted = [t.strip() for t in wanted.split(",") if t.strip()]
    return [t for t in registered() if not wanted or t in wanted]


# --- the built-in types ------------------------------------------------------------------------------
register("chat", handler=ChatHandler(), sync=p.ChatCompletions, async_=p.BackgroundResponses)
register("image", handler=ImageHandler(), sync=p.ImageGenerations)
register("video", handler=VideoHandler(), async_=p.Videos)
