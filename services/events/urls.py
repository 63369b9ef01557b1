"""Where a webhook may be sent: the SSRF guard.

A URL is http(s) with a host and no credentials. Its host must resolve only to public addresses:
private, loopback, link-local, multicast, reserved and unspecified ones are refused unless
`WEBHOOK_ALLOW_PRIVATE_URLS=1` (tests, local use). The check runs when an endpoint is created and
again at every delivery, on the addresses the name resolves to then; the delivery connects to
the address that was checked (services.events.http), so a DNS answer that changes between the
check and the connection cannot point it inside the network. Redirects are never followed.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import current_app, has_app_context

from services.core.errors import ValidationFailed

MAX_URL = 2000


class UnsafeUrl(ValidationFailed):
    """The URL is not one webhooks may be sent to (422 VALIDATION_ERROR, details.url says why)."""

    def __init__(self, message: str):
        super().__init__(message, details={"url": message})


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `address`, say `host_header`, verify TLS for `host`."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def allow_private() -> bool:
    raw = current_app.config.get("WEBHOOK_ALLOW_PRIVATE_URLS") if has_app_context() else None
    if raw is None:
        raw = os.environ.get("WEBHOOK_ALLOW_PRIVATE_URLS", "")
    if isinstance(raw, str):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return bool(raw)


def refused_reason(address: str) -> str | None:
    """Why webhooks may not go to this IP address, or None when it is a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):
        if getattr(ip, f"is_{name}"):
            return f"{address} is a {name.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of a well-formed http(s) URL, else UnsafeUrl."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
        raise UnsafeUrl(f"The URL must be 1 to {MAX_URL} characters.")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeUrl("The URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("The URL is not valid.") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("The URL must start with https:// (or http://).")
    if not parts.hostname:
        raise UnsafeUrl("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("The URL may not contain a user name or password.")
    if parts.fragment:
        raise UnsafeUrl("The URL may not contain a #fragment.")
    port = port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UnsafeUrl(f"The host {host} does not resolve ({err}).") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def check(url: str, *, resolve: bool = True) -> None:
    """At creation: the URL is well formed and, unless private URLs are allowed, neither an
    address literal nor (when it resolves now) any address of its name is a private one. A name
    that does not resolve yet is accepted: every delivery resolves and checks it again."""
    scheme, host, port, _ = parse(url)
    if allow_private():
        return
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise UnsafeUrl(f"{host} is a loopback name; set WEBHOOK_ALLOW_PRIVATE_URLS=1 to "
                            "allow private URLs.") from None
        try:
            addresses = _addresses(host, port) if resolve else []
        except UnsafeUrl:
            addresses = []
    for a in addresses:
        if reason := refused_reason(a):
            raise UnsafeUrl(f"Webhooks may not be sent to {host}: {reason}. Set "
                            "WEBHOOK_ALLOW_PRIVATE_URLS=1 to allow private URLs.")


def target(url: str) -> Target:
    """At delivery: resolve now and check every address; the first is the one to connect to."""
    scheme, host, port, path = parse(url)
    addresses = _addresses(host, port)
    if not allow_private():
        for a in addresses:
            if reason := refused_reason(a):
                raise UnsafeUrl(f"refused: {host} resolves to {reason}")
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])
