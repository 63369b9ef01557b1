"""Pydantic models of API bodies and answers; /api/openapi.json is generated from them.

Request models are strict: extra fields are refused, numbers must be JSON integers (no floats,
strings or booleans), text has a bounded length.
"""
from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    create_model,
)

from services.catalog.pricing import MAX_QUANTITY
from services.ledger.customers import MAX_BATCH as MAX_BATCH_CUSTOMERS
from services.ledger.rules import MAX_CREDITS, PAID_SOURCES, POSTABLE_SOURCES
from services.tasks.prepaid import MAX_TIMEOUT

MAX_PATH_ARG = 128  # a text path argument (core.path_text; maxLength in the OpenAPI document)
MAX_METADATA_BYTES = 16 * 1024
MAX_TASK_DATA_BYTES = 64 * 1024
# Paid buckets come only with a payment (purchases, subscriptions), never from a grant call.
API_GRANT_SOURCES = tuple(s for s in POSTABLE_SOURCES if s not in PAID_SOURCES)


def _bounded_json(limit: int):
    def check(value: dict | None) -> dict | None:
        if value is not None and len(json.dumps(value, separators=(",", ":"))) > limit:
            raise ValueError(f"must serialize to at most {limit} bytes of JSON")
        return value
    return AfterValidator(check)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Credits = Annotated[StrictInt, Field(gt=0, le=MAX_CREDITS, description="whole credits, > 0")]
Quantity = Annotated[StrictInt, Field(gt=0, le=MAX_QUANTITY, description="units of the feature")]
Text = Annotated[StrictStr, AfterValidator(_no_blank)]
Feature = Annotated[Text, Field(min_length=1, max_length=64, examples=["chat"])]
Reference = Annotated[StrictStr, Field(max_length=200, description="your id for the work paid for")]
ExternalId = Annotated[Text, Field(min_length=1, max_length=MAX_PATH_ARG,
                                   description="the product's user id")]
IdemKey = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Metadata = Annotated[dict[str, Any], _bounded_json(MAX_METADATA_BYTES)]
TaskData = Annotated[dict[str, Any], _bounded_json(MAX_TASK_DATA_BYTES)]
Timestamp = Annotated[datetime, Field(strict=False, description="ISO 8601; UTC when no offset"),
                      AfterValidator(_naive_utc)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- requests ---------------------------------------------------------------------------------

class CustomerUpsert(Body):
    email: Annotated[StrictStr, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    name: Annotated[StrictStr, Field(max_length=200)] = ""
    plan: Annotated[StrictStr, Field(min_length=1, max_length=64, description="plan code")] | None = None
    low_balance_threshold: Annotated[StrictInt, Field(
        ge=0, le=MAX_CREDITS, description="The customer's own credits.low_balance threshold "
        "(docs/notices.md): absent leaves it as it is, null removes it (the plan's or the "
        "setting's applies), 0 turns the notice off")] | None = None


class AutoTopupIn(Body):
    enabled: bool = Field(description="true also resumes an auto top-up paused after 3 failures")
    threshold: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS,
                                          description="charge when a debit takes the balance below this")]
    package_id: Annotated[StrictInt, Field(gt=0, le=2**53, description="an active, paid credit package")]
    monthly_limit: Annotated[StrictInt, Field(ge=1, le=100, description="top-ups per calendar month (UTC)")]


class CustomerBatchItem(CustomerUpsert):
    """One customer of POST /api/v1/customers/batch: the PUT body and the id PUT has in its path."""
    external_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_PATH_ARG, pattern=r"^[^/]+$",
                                            description="the product's user id (no /: it is a "
                                                        "path segment of the other routes)"),
                           AfterValidator(_no_blank)]


# Each item is validated on its own (a bad one gets its error in its result, the others go on),
# so the list takes any JSON object; the document shows the shape an item must have.
_BATCH_CUSTOMER = Annotated[dict[str, Any], WithJsonSchema({
    "anyOf": [CustomerBatchItem.model_json_schema(), {"type": "object"}],
    "description": "a customer (CustomerBatchItem); an object that is not one gets a per-item "
                   "VALIDATION_ERROR result"})]


class CustomerBatchIn(Body):
    customers: Annotated[list[_BATCH_CUSTOMER], Field(min_length=1, max_length=MAX_BATCH_CUSTOMERS)]


class LedgerQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=200, description="next_cursor of the previous page")] = None


class DebitIn(Body):
    feature: Feature
    quantity: Quantity | None = None
    credits: Credits | None = Field(None, description="explicit price; needs scope grants:write")
    reference: Reference | None = None
    metadata: Metadata | None = None


class BatchItem(Body):
    customer: ExternalId
    feature: Feature
    quantity: Quantity | None = None
    credits: Credits | None = None
    idempotency_key: IdemKey
    reference: Reference | None = None


class BatchIn(Body):
    debits: Annotated[list[BatchItem], Field(min_length=1, max_length=1000)]


class GrantIn(Body):
    credits: Credits
    source: Literal[API_GRANT_SOURCES]
    expires_at: Timestamp | None = None
    reason: Annotated[Text, Field(min_length=1, max_length=500)]


class TaskIn(Body):
    customer: ExternalId
    type: Feature
    mode: Literal["sync", "async"] = "sync"
    estimated_credits: Credits | None = None
    input: TaskData | None = None
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT)] | None = None


class TaskComplete(Body):
    actual_credits: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS)]
    output: TaskData | None = None


class TaskFail(Body):
    error: Annotated[Text, Field(min_length=1, max_length=2000)]


# --- answers --------------------------------------------------------------------------------------

class GrantOut(BaseModel):
    id: int
    source: str
    amount: int
    remaining: int
    expires_at: str | None
    created_at: str


class CustomerOut(BaseModel):
    external_id: str
    email: str
    name: str
    plan: str | None
    subscription_status: str
    balance: int
    low_balance_threshold: int = Field(description="the threshold in force: the customer's, "
                                       "else its plan's, else the setting's")
    low_balance_threshold_override: int | None = Field(description="the customer's own, if set")
    grants: list[GrantOut]
    created_at: str
    updated_at: str
    created: bool | None = Field(None, description="PUT only: whether the customer is new")


class SavedCardOut(BaseModel):
    brand: str | None
    last4: str | None


class AutoTopupOut(BaseModel):
    external_id: str
    enabled: bool
    threshold: int | None
    package_id: int | None
    monthly_limit: int | None
    this_month: int = Field(description="top-ups charged (or being charged) this month")
    failures: int = Field(description="declines in a row; 3 pause auto top-up")
    paused: bool
    paused_at: str | None
    payment_method: SavedCardOut | None = Field(description="the card saved at a Stripe Checkout")


class EntryOut(BaseModel):
    id: int
    type: str
    amount: int
    balance_before: int
    balance_after: int
    feature: str | None
    quantity: int | None
    reference: str | None
    reason: str | None
    task_id: int | None
    actor_type: str
    request_id: str | None
    metadata: dict | None
    created_at: str


class LedgerPage(BaseModel):
    entries: list[EntryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


def _iso_day(value: Any) -> Any:
    """YYYY-MM-DD only: pydantic would also read `0` or `1700000000` as a date (unix time)."""
    if isinstance(value, str) and not (len(value) == 10 and value[4] == value[7] == "-"
                                       and value.replace("-", "").isascii()
                                       and value.replace("-", "").isdigit()):
        raise ValueError("a date is YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    date_from: Day | None = Field(None, alias="from", description="first UTC day (YYYY-MM-DD); "
                                  "29 days before `to` when absent")
    date_to: Day | None = Field(None, alias="to", description="last UTC day, inclusive; today "
                                "when absent; at most 366 days after `from`")


class UsageFigures(BaseModel):
    spent: int = Field(description="credits debited")
    refunded: int = Field(description="credits of those debits given back")
    net: int = Field(description="spent - refunded")
    debits: int = Field(description="number of debit entries")


class FeatureUsage(UsageFigures):
    feature: str | None


class DayUsage(UsageFigures):
    day: str = Field(description="UTC day, YYYY-MM-DD")


class UsageOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    totals: UsageFigures
    by_feature: list[FeatureUsage]
    by_day: list[DayUsage] = Field(description="days with movements only, oldest first")


class DebitOut(BaseModel):
    entry_id: int
    credits: int
    balance: int


class BatchResult(BaseModel):
    index: int
    idempotency_key: str
    success: bool
    entry_id: int | None = None
    credits: int | None = None
    balance: int | None = None
    replayed: bool | None = None
    code: str | None = None
    error: str | None = None
    retryable: bool | None = None


class BatchOut(BaseModel):
    results: list[BatchResult]
    succeeded: int
    failed: int


class CustomerBatchResult(BaseModel):
    index: int
    external_id: str | None = Field(description="as sent (trimmed); null when not a text")
    status: Literal["created", "updated", "unchanged", "error"]
    code: str | None = Field(None, description="error only: the code PUT would answer")
    error: str | None = None
    retryable: bool | None = None
    details: Any = Field(None, description="error only: field -> problem, as PUT answers")


class CustomerBatchOut(BaseModel):
    results: list[CustomerBatchResult]
    created: int
    updated: int
    unchanged: int
    failed: int


class GrantCreated(BaseModel):
    entry_id: int
    grant_id: int
    credits: int
    balance: int
    expires_at: str | None


class TaskCreated(BaseModel):
    task_id: int
    status: str
    charged_credits: int
    balance: int


class TaskOut(BaseModel):
    task_id: int
    customer: str
    type: str
    mode: str
    status: str
    estimated_credits: int
    charged_credits: int
    actual_credits: int | None = Field(description="charged for the work once settled: the "
                                       "reported usage capped at charged_credits")
    usage_credits: int | None = Field(description="the usage as reported at completion, uncapped "
                                      "(above actual_credits when the estimate was too low)")
    refunded_credits: int
    input: dict | None
    output: dict | None
    error: str | None
    deadline_at: str
    created_at: str
    finished_at: str | None
    balance: int


class PackageOut(BaseModel):
    id: int
    code: str
    name: str
    credits: int
    price_minor: int = Field(description="What a checkout started now charges, in minor units")
    currency: str
    expiry_days: int | None
    pricing: Literal["fixed", "per_credit"] = Field(
        description="fixed, or per_credit: credits x the price per credit of the currency, "
                    "less discount_bp, rounded half up to a minor unit")
    discount_bp: int = Field(description="Discount on the per-credit price in basis points")


class PlanOut(BaseModel):
    id: int
    code: str
    name: str
    interval: str
    price_minor: int
    currency: str
    monthly_credits: int
    credit_expiry_days: int | None
    description: str


class PackageList(BaseModel):
    packages: list[PackageOut]


class PlanList(BaseModel):
    plans: list[PlanOut]


class PurchaseEligibility(BaseModel):
    payment_id: int
    provider: str
    kind: str
    paid_at: str | None
    credits: int
    amount_minor: int
    eligible: bool
    refundable_credits: int
    refundable_amount: int
    currency: str
    reason: str


class EligibilityOut(BaseModel):
    external_id: str
    window_days: int
    eligible: bool = Field(description="whether any purchase can be refunded")
    purchases: list[PurchaseEligibility]


# --- envelopes and headers (the OpenAPI document; dashboard/api/openapi.py) ------------------------

class ErrorBody(BaseModel):
    """Every error answer under /api/ (core.fail)."""
    success: Literal[False]
    error: str = Field(description="a message for people")
    code: str = Field(description="a stable machine code, see docs/error-codes.md")
    retryable: bool = Field(description="whether the same request may succeed later")
    details: Any = Field(None, description="field -> problem for VALIDATION_ERROR; else context")


_ENVELOPES: dict[type[BaseModel], type[BaseModel]] = {}


def envelope(model: type[BaseModel]) -> type[BaseModel]:
    """The success envelope `{success: true, data: <model>}` of one answer model (core.ok)."""
    if model not in _ENVELOPES:
        _ENVELOPES[model] = create_model(f"{model.__name__}Envelope", __module__=model.__module__,
                                         success=(Literal[True], ...), data=(model, ...))
    return _ENVELOPES[model]


class OpenAPIDocument(RootModel[dict[str, Any]]):
    """The bare OpenAPI object (GET /api/openapi.json is served without the envelope)."""


class IdempotencyHeader(BaseModel):
    idempotency_key: IdemKey = Field(
        None, alias="Idempotency-Key",
        description="Replays the stored reply for a retry with the same key and body for 24 h; "
                    "another body under it is 409 IDEMPOTENCY_KEY_REUSED.")


class StripeHeaders(BaseModel):
    stripe_signature: StrictStr = Field(alias="Stripe-Signature",
                                        description="t=<unix>,v1=<hex HMAC-SHA256> over the raw body")


class RazorpayHeaders(BaseModel):
    signature: StrictStr = Field(alias="X-Razorpay-Signature",
                                 description="hex HMAC-SHA256 of the raw body (webhook secret)")
    event_id: StrictStr = Field(None, alias="X-Razorpay-Event-Id",
                                description="deduplicates redeliveries")


class CustomerWebhookHeaders(BaseModel):
    signature: StrictStr = Field(alias="X-Creditdesk-Signature",
                                 description="t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>")


class StripeEvent(BaseModel):
    """A Stripe event, verified over the raw bytes before it is parsed."""
    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    data: dict[str, Any]


class RazorpayEvent(BaseModel):
    """A Razorpay event, verified over the raw bytes before it is parsed."""
    model_config = ConfigDict(extra="allow")
    event: str
    payload: dict[str, Any]


def iso(value: datetime | None) -> str | None:
    """Naive UTC -> ISO 8601 with Z."""
    return None if value is None else value.isoformat() + "Z"
