"""Standard Webhooks signing (standardwebhooks.com): secrets, the body and the three headers.

The body is computed from the outbox row alone (sorted keys, no spaces), so every attempt of
every delivery of an event sends the same bytes; only `webhook-timestamp` and the signature
change between attempts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime

from models import OutboxEvent

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def iso(at: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, the one timestamp format of event bodies."""
    if at is None:
        return None
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def body(event: OutboxEvent) -> bytes:
    """`{"type", "timestamp", "data"}` of an event, byte for byte the same every time."""
    doc = {"type": event.type, "timestamp": iso(event.created_at), "data": event.data}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the base64-decoded secret."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(signing_secrets: list[str], msg_id: str, timestamp: int, payload: bytes) -> dict:
    """The Standard Webhooks headers; several secrets (a rotation) give space-separated signatures."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, msg_id, timestamp, payload)
                                          for s in signing_secrets)}
