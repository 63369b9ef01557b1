"""Money in: purchases (Stripe Checkout, Razorpay orders), subscriptions, the signed
webhooks of both providers and their handlers, the product's customer-lifecycle webhook
(customer_sync), replaying stored events, provider reconciliation, and auto top-up
(autotopup: settings and the card saved at Checkout; autotopup_charge: off-session charges).
Provider SDK calls go through services.providers.

Owns: payments, subscriptions, webhook events, auto top-up settings and attempts.
May use: core, ledger, catalog, providers, refunds, events.
"""
