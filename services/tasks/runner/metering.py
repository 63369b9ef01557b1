"""What a provider call costs in credits: usage x the feature's price row.

The price row's `unit` says what `credits_per_unit` counts (docs/tasks.md, "Pricing"):
- tokens: "token", or a block such as "1k tokens", "1000 tokens", "1m tokens": credits =
  ceil(total tokens x credits_per_unit / block);
- "image": credits_per_unit per image; "second": per second of video;
- anything else ("request", "message", "clip"...): credits_per_unit per call.
"""
from __future__ import annotations

import math
import re

from models import FeaturePrice
from services.catalog import pricing
from services.tasks.runner.providers import Usage

_TOKENS = re.compile(r"^(?:(\d+)\s*([km])?\s*)?tokens?$")
_SCALE = {None: 1, "k": 1_000, "m": 1_000_000}


def price_of(feature: str) -> FeaturePrice | None:
    """The price of `feature`, else of its family (`chat` for `chat:gpt-4o`)."""
    price = pricing.price_for(feature)
    if price is None and ":" in feature:
        price = pricing.price_for(feature.split(":", 1)[0])
    return price


def tokens_block(price: FeaturePrice) -> int | None:
    """Tokens per `credits_per_unit` when the price is per token(s), else None."""
    m = _TOKENS.match((price.unit or "").strip().lower())
    if not m:
        return None
    return int(m.group(1) or 1) * _SCALE[m.group(2)]


def credits_for_tokens(price: FeaturePrice, tokens: int) -> int:
    block = tokens_block(price)
    if block is None:
        return price.credits_per_unit
    return math.ceil(max(tokens, 0) * price.credits_per_unit / block)


def usage_credits(price: FeaturePrice | None, usage: Usage, *, fallback: int) -> int:
    """Credits for what a call used; `fallback` (the charged estimate) when nothing is priced."""
    if price is None:
        return fallback
    unit = (price.unit or "").strip().lower()
    if tokens_block(price) is not None:
        return credits_for_tokens(price, usage.total_tokens)
    if unit in ("image", "images"):
        return price.credits_per_unit * max(usage.images, 1)
    if unit in ("second", "seconds", "s"):
        return price.credits_per_unit * max(usage.seconds, 1)
    return price.credits_per_unit


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A generous prompt-size estimate before the provider counts: one token per 3 characters
    (English averages ~4), plus the few tokens of framing a chat format adds per message."""
    return sum(math.ceil(len(str(m.get("content", ""))) / 3) + 4 for m in messages) + 3


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / 3)
