"""Outbound events for the product (docs/webhooks.md): the outbox written in the same
transaction as the change that causes an event (outbox), and what reads and delivers it.

Owns: outbox_events and the delivery side of outbound webhooks.
May use: core only; every domain that causes an event calls `outbox.emit` inside its own
transaction, so an event is committed or rolled back with its change.
"""
