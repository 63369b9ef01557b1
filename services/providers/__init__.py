"""Payment provider adapters: the only code that imports the Stripe and Razorpay SDKs.

`services.providers.stripe` and `services.providers.razorpay` expose keyword-only functions
that take plain values, read their keys from `current_app.config`, answer plain dicts, and
raise only `PaymentProviderError` (provider or network failed; retry with the same key) or
`InvalidSignature` (a webhook or Checkout signature does not verify). See docs/providers.md.
"""
