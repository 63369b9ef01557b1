"""One POST of a webhook to a checked address (services.events.urls.Target).

urllib3 connects to the address that was checked, sends the URL's host in `Host` (and as the
TLS server name, verified against the certificate), follows no redirect and retries nothing:
the delivery schedule does the retrying.
"""
from __future__ import annotations

from dataclasses import dataclass

import urllib3

from services.events.urls import Target

TIMEOUT_SECONDS = 10
EXCERPT = 2000  # characters of the answer kept with the attempt
USER_AGENT = "Creditdesk-Webhooks/1"


@dataclass
class Answer:
    status: int
    body: str


def post(target: Target, headers: dict, payload: bytes,
         timeout: float = TIMEOUT_SECONDS) -> Answer:
    """POST `payload`; the answer's status and the start of its body (urllib3 errors raise)."""
    t = urllib3.Timeout(total=timeout, connect=timeout, read=timeout)
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=t, retries=False,
                                           server_hostname=target.host,
                                           assert_hostname=target.host, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=t, retries=False)
    try:
        resp = pool.urlopen("POST", target.path, body=payload, redirect=False, retries=False,
                            preload_content=False, assert_same_host=False,
                            headers={**headers, "Host": target.host_header,
                                     "Content-Type": "application/json",
                                     "User-Agent": USER_AGENT})
        try:
            raw = resp.read(EXCERPT * 4, decode_content=True) or b""
        finally:
            resp.release_conn()
        return Answer(status=resp.status, body=raw.decode("utf-8", "replace")[:EXCERPT])
    finally:
        pool.close()
