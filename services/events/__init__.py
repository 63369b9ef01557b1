"""Outbound events for the product (docs/webhooks.md): the outbox written in the same
transaction as the change that causes an event (outbox), and what reads and delivers it:
the product's endpoints (endpoints), the SSRF guard (urls), Standard Webhooks signing (signing),
the HTTP call (sender) and the delivery schedule (delivery).

Owns: outbox_events, webhook_endpoints, webhook_deliveries, webhook_attempts.
May use: core only; every domain that causes an event calls `outbox.emit` inside its own
transaction, so an event is committed or rolled back with its change.
"""
