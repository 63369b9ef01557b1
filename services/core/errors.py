"""Typed domain errors: each carries its HTTP status, API code and whether a retry may help."""
from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "VALIDATION_ERROR"
    retryable = False

    def __init__(self, message: str = "", *, details: dict | list | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationFailed(ServiceError):
    """The request is not valid."""
    status, code = 422, "VALIDATION_ERROR"


class NotFound(ServiceError):
    """Not found."""
    status, code = 404, "NOT_FOUND"


class CustomerNotFound(NotFound):
    """Customer not found."""
    code = "CUSTOMER_NOT_FOUND"


class TaskNotFound(NotFound):
    """Task not found."""
    code = "TASK_NOT_FOUND"


class InsufficientCredits(ServiceError):
    """Insufficient credits."""
    status, code = 402, "INSUFFICIENT_CREDITS"


class IdempotencyConflict(ServiceError):
    """This idempotency key was already used for a different request."""
    status, code = 409, "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInUse(ServiceError):
    """A request with this idempotency key is still being processed."""
    status, code, retryable = 409, "IDEMPOTENCY_KEY_IN_USE", True


class TaskAlreadyFinished(ServiceError):
    """The task is already finished."""
    status, code = 409, "TASK_ALREADY_FINISHED"


class InvalidSignature(ServiceError):
    """Invalid signature."""
    status, code = 400, "INVALID_SIGNATURE"


class RefundNotEligible(ServiceError):
    """Not eligible for a refund."""
    status, code = 409, "REFUND_NOT_ELIGIBLE"


class PaymentProviderError(ServiceError):
    """The payment provider failed; try again."""
    status, code, retryable = 502, "PAYMENT_PROVIDER_ERROR", True


class Conflict(ServiceError):
    """The request conflicts with the current state."""
    status, code = 409, "CONFLICT"


class Forbidden(ServiceError):
    """Not allowed."""
    status, code = 403, "AUTH_FORBIDDEN"


class RateLimited(ServiceError):
    """Too many requests; retry after the delay in Retry-After."""
    status, code, retryable = 429, "RATE_LIMITED", True

    def __init__(self, message: str = "", *, retry_after: int = 60, details=None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceError):
    """The database is unavailable; retry after the delay in Retry-After."""
    status, code, retryable = 503, "DATABASE_UNAVAILABLE", True
