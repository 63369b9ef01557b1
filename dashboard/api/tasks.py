"""Prepaid tasks over the API: create (charge the estimate), read, complete (settle), fail (refund)."""
from __future__ import annotations

from flask import Blueprint, g

from dashboard.api import limits
from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import MAX_SAFE_INT, describe, ok, parse
from dashboard.api.idempotency import idempotent, scoped
from models import Task
from services.core.errors import TaskNotFound
from services.ledger import customers
from services.tasks import prepaid as tasks

bp = Blueprint("api_tasks", __name__, url_prefix="/api/v1/tasks")

IDEM = ("IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE")


def task_json(t: Task) -> dict:
    return {"task_id": t.id, "customer": t.customer.external_id, "type": t.type, "mode": t.mode,
            "status": t.status, "estimated_credits": t.estimated_credits,
            "charged_credits": t.charged_credits, "actual_credits": t.actual_credits,
            "usage_credits": t.usage_credits, "refunded_credits": t.refunded_credits,
            "input": t.input, "output": t.output,
            "error": t.error, "deadline_at": sc.iso(t.deadline_at), "created_at": sc.iso(t.created_at),
            "finished_at": sc.iso(t.finished_at), "balance": customers.account_of(t.customer_id).balance}


def _task_id(task_id: int) -> int:
    if task_id > MAX_SAFE_INT:  # beyond any id we hand out (and beyond a BIGINT)
        raise TaskNotFound(f"Task {task_id} not found.")
    return task_id


@bp.post("")
@describe(summary="Create a prepaid task and charge its estimate", body=sc.TaskIn,
          response=sc.TaskCreated, status=201, scopes=("tasks:write",), idempotent=True,
          errors=("CUSTOMER_NOT_FOUND", "INSUFFICIENT_CREDITS", *IDEM), tag="tasks",
          description="The estimate comes from the price of the feature named by `type` unless "
                      "`estimated_credits` is sent.")
@api_key_required("tasks:write")
@idempotent
def create():
    body = parse(sc.TaskIn)
    limits.check_customer(body.customer)
    key = scoped(g.get("idempotency_key"))
    task = tasks.create(type=body.type, external_id=body.customer, mode=body.mode,
                        estimated_credits=body.estimated_credits, input=body.input,
                        timeout_seconds=body.timeout_seconds, key=f"api:{key}" if key else None,
                        actor=g.actor)
    return ok({"task_id": task.id, "status": task.status, "charged_credits": task.charged_credits,
               "balance": customers.account_of(task.customer_id).balance}, 201)


@bp.get("/<int:task_id>")
@describe(summary="A task", response=sc.TaskOut, scopes=("tasks:write",), errors=("TASK_NOT_FOUND",),
          tag="tasks")
@api_key_required("tasks:write")
def detail(task_id: int):
    return ok(task_json(tasks.get(_task_id(task_id))))


@bp.post("/<int:task_id>/complete")
@describe(summary="Settle a task: refund estimate minus actual", body=sc.TaskComplete,
          response=sc.TaskOut, scopes=("tasks:write",), idempotent=True,
          errors=("TASK_NOT_FOUND", "TASK_ALREADY_FINISHED", *IDEM), tag="tasks",
          description="Never charges more than the estimate: actual above it is capped.")
@api_key_required("tasks:write")
@idempotent
def complete(task_id: int):
    body = parse(sc.TaskComplete)
    task = tasks.complete(task_id=_task_id(task_id), actual_credits=body.actual_credits,
                          output=body.output, actor=g.actor)
    return ok(task_json(task))


@bp.post("/<int:task_id>/fail")
@describe(summary="Fail a task: full refund", body=sc.TaskFail, response=sc.TaskOut,
          scopes=("tasks:write",), idempotent=True,
          errors=("TASK_NOT_FOUND", "TASK_ALREADY_FINISHED", *IDEM), tag="tasks")
@api_key_required("tasks:write")
@idempotent
def fail(task_id: int):
    body = parse(sc.TaskFail)
    task = tasks.fail(task_id=_task_id(task_id), error=body.error, actor=g.actor)
    return ok(task_json(task))
