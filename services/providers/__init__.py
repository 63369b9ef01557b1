"""The only code that imports the Stripe and Razorpay SDKs: keyword-only functions that
return plain values and raise typed errors.

Owns: nothing stored.
May use: core.
"""
