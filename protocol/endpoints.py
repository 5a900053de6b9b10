"""Endpoint helpers shared by the server and the clients. Standard library only; no bpy, no torch."""

import ipaddress
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for tcp endpoints on 127.0.0.0/8, ::1 or localhost, and for ipc:// and inproc://."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", a host name or an interface name: reachable from outside
