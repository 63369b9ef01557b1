"""All models, imported in one place so that metadata and Alembic see every table."""
from models import functions  # noqa: F401 - the database functions are created with the tables
from models.analytics import LedgerDaily, LedgerRollupState
from models.autotopup import AutoTopup, AutoTopupAttempt
from models.base import db, utcnow
from models.catalog import CreditPackage, FeaturePrice, Plan, Setting, SettingChange
from models.chat import PromptCache
from models.customer import Account, Customer
from models.event import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from models.job import JobRun, JobRunError, WebhookEvent
from models.ledger import Allocation, CreditGrant, IdempotencyRecord, LedgerEntry
from models.payment import Payment, Refund
from models.staff import AdjustmentRequest, ApiKey, AuditLog, Staff
from models.summary import StatementSummary
from models.task import Task, TaskLog

__all__ = [
    "db", "utcnow", "Account", "AdjustmentRequest", "Allocation", "ApiKey", "AuditLog",
    "AutoTopup", "AutoTopupAttempt",
    "CreditGrant", "CreditPackage", "Customer", "FeaturePrice", "IdempotencyRecord", "JobRun",
    "JobRunError", "LedgerDaily", "LedgerEntry", "LedgerRollupState", "OutboxEvent", "Payment",
    "Plan", "PromptCache", "Refund", "Setting", "SettingChange", "Staff", "StatementSummary", "Task",
    "TaskLog", "WebhookAttempt", "WebhookDelivery", "WebhookEndpoint", "WebhookEvent",
]
