"""Which machine a request comes from and is addressed to: one reading for every loopback rule
(`/metrics` without a token, the sandbox)."""
import ipaddress
from urllib.parse import urlsplit


def is_loopback(host):
    """`localhost` or a loopback address (`127.0.0.1`, `::1`, `fe80::1%lo`-style scopes cut)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def host_name(host):
    """The name or address in a Host header ("[::1]:9000" -> "::1"), lower-cased; "" when malformed."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


def addressed_to_this_machine(host, server_name=None):
    """Whether a Host header names this machine (a loopback name or address) or `server_name`.

    A browser on this machine reaches loopback too, and a page whose own name an attacker points
    at 127.0.0.1 (DNS rebinding) sends its requests with its own name as the Host: checking the
    client's address alone would answer it."""
    name = host_name(host)
    return is_loopback(name) or (server_name is not None and name == server_name.lower())
