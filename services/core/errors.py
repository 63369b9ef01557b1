"""Typed domain errors: each carries its HTTP status, API code and whether a retry may help."""
from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "VALIDATION_ERROR"
    retryable = False

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          retryable: bool | None = None, **kw):
        # `class X(ServiceError, status=409, code="X")`: one line per error, the rest inherited.
        super().__init_subclass__(**kw)
        for name, value in (("status", status), ("code", code), ("retryable", retryable)):
            if value is not None:
                setattr(cls, name, value)

    def __init__(self, message: str = "", *, details: dict | list | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationFailed(ServiceError, status=422, code="VALIDATION_ERROR"):
    """The request is not valid."""


class NotFound(ServiceError, status=404, code="NOT_FOUND"):
    """Not found."""


class CustomerNotFound(NotFound, code="CUSTOMER_NOT_FOUND"):
    """Customer not found."""


class TaskNotFound(NotFound, code="TASK_NOT_FOUND"):
    """Task not found."""


class InsufficientCredits(ServiceError, status=402, code="INSUFFICIENT_CREDITS"):
    """Insufficient credits."""


class IdempotencyConflict(ServiceError, status=409, code="IDEMPOTENCY_KEY_REUSED"):
    """This idempotency key was already used for a different request."""


class IdempotencyInUse(ServiceError, status=409, code="IDEMPOTENCY_KEY_IN_USE", retryable=True):
    """A request with this idempotency key is still being processed."""


class TaskAlreadyFinished(ServiceError, status=409, code="TASK_ALREADY_FINISHED"):
    """The task is already finished."""


class InvalidSignature(ServiceError, status=400, code="INVALID_SIGNATURE"):
    """Invalid signature."""


class RefundNotEligible(ServiceError, status=409, code="REFUND_NOT_ELIGIBLE"):
    """Not eligible for a refund."""


class PaymentProviderError(ServiceError, status=502, code="PAYMENT_PROVIDER_ERROR", retryable=True):
    """The payment provider failed; try again."""


class Conflict(ServiceError, status=409, code="CONFLICT"):
    """The request conflicts with the current state."""


class Forbidden(ServiceError, status=403, code="AUTH_FORBIDDEN"):
    """Not allowed."""


class RateLimited(ServiceError, status=429, code="RATE_LIMITED", retryable=True):
    """Too many requests; retry after the delay in Retry-After."""

    def __init__(self, message: str = "", *, retry_after: int = 60, details=None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceError, status=503, code="DATABASE_UNAVAILABLE", retryable=True):
    """The database is unavailable; retry after the delay in Retry-After."""
