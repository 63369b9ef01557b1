"""Money in: purchases (Stripe Checkout, Razorpay orders), subscriptions, the signed
webhooks of both providers and their handlers, the product's customer-lifecycle webhook
(customer_sync), replaying stored events, and provider reconciliation. Provider SDK calls go
through services.providers.

Owns: payments, subscriptions, webhook events.
May use: core, ledger, catalog, providers, refunds.
"""
