"""Both payment provider doubles on fixed local ports, for `make run` and trying the product by hand.

    python -m tests.fakes.serve                 # serve until Ctrl-C, print the exports first
    python -m tests.fakes.serve --print-env     # only print the exports (eval "$(...)")

The keys and webhook secrets are the doubles' own demo values (tests/fakes/*_server.py): they
open nothing but these in-memory servers on 127.0.0.1. State lives in memory: restarting the
doubles forgets every session, order and payment they held.
"""
from __future__ import annotations

import argparse
import os
import shlex
import threading

from tests.fakes.razorpay_server import TEST_KEY_ID as RAZORPAY_KEY_ID
from tests.fakes.razorpay_server import TEST_KEY_SECRET as RAZORPAY_KEY_SECRET
from tests.fakes.razorpay_server import TEST_WEBHOOK_SECRET as RAZORPAY_WEBHOOK_SECRET
from tests.fakes.razorpay_server import FakeRazorpay
from tests.fakes.stripe_server import TEST_SECRET_KEY as STRIPE_SECRET_KEY
from tests.fakes.stripe_server import TEST_WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET
from tests.fakes.stripe_server import FakeStripe

DEFAULT_STRIPE_PORT = 12111
DEFAULT_RAZORPAY_PORT = 12112


def env(stripe_port: int, razorpay_port: int) -> dict[str, str]:
    """The variables that point Creditdesk at the doubles on these ports."""
    return {
        "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY, "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "RAZORPAY_KEY_ID": RAZORPAY_KEY_ID, "RAZORPAY_KEY_SECRET": RAZORPAY_KEY_SECRET,
        "RAZORPAY_WEBHOOK_SECRET": RAZORPAY_WEBHOOK_SECRET,
        "RAZORPAY_API_BASE": f"http://127.0.0.1:{razorpay_port}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stripe-port", type=int,
                        default=int(os.environ.get("STRIPE_DOUBLE_PORT") or DEFAULT_STRIPE_PORT))
    parser.add_argument("--razorpay-port", type=int,
                        default=int(os.environ.get("RAZORPAY_DOUBLE_PORT") or DEFAULT_RAZORPAY_PORT))
    parser.add_argument("--print-env", action="store_true", help="print the exports and exit")
    args = parser.parse_args(argv)
    exports = env(args.stripe_port, args.razorpay_port)
    if args.print_env:
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")  # noqa: T201 - a developer tool
        return
    with FakeStripe(port=args.stripe_port), FakeRazorpay(port=args.razorpay_port):
        print(f"Provider doubles: Stripe on {exports['STRIPE_API_BASE']}, "  # noqa: T201
              f"Razorpay on {exports['RAZORPAY_API_BASE']}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
