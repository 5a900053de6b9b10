"""Endpoint helpers shared by the server and the clients. Standard library only; no bpy, no torch."""

import ipaddress
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for tcp endpoints on 127.0.0.0/8, ::1 or localhost, and for ipc:// and inproc://."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    try:
        host = urlsplit(f"//{rest}").hostname or ""
    except ValueError:  # an unclosed "[": not an address at all; the bind names the problem
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as an IPv6 socket names an IPv4 peer
        return address.is_loopback or (mapped is not None and mapped.is_loopback)
    except ValueError:
        return False  # "*", a host name or an interface name: reachable from outside


def endpoint_problem(endpoint: object) -> str | None:
    """Why a client cannot connect to `endpoint` (a message naming the rule), or None: `tcp://HOST:PORT` with a port
    1 to 65535 and a host name, IPv4 address or [IPv6] address, or `ipc://PATH`, or `inproc://NAME`."""
    shape = f"must look like 'tcp://HOST:PORT' (IPv6: 'tcp://[::1]:PORT'), got {endpoint!r}"
    if not isinstance(endpoint, str):
        return shape
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return None if rest else shape
    if scheme != "tcp":
        return shape
    try:
        parts = urlsplit(f"//{rest}")
        port = parts.port
    except ValueError:  # a port that is no number or out of range, an unclosed "["
        return shape + "; the port must be a number from 1 to 65535"
    if parts.hostname in (None, "", "*") or not port or parts.path or parts.query or parts.fragment:
        return shape
    if "@" in parts.netloc:  # ZeroMQ would refuse it on every attempt, and the client would retry for ever
        return shape + "; ZeroMQ endpoints take no user name or password"
    return None
