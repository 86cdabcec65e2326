"""Loopback bind addresses and Host headers: what keeps a loopback server from web pages.

A server bound to a loopback address is reachable from this machine only, yet a web page
elsewhere can still reach it through the browser: it rebinds its own DNS name to 127.0.0.1 and
then reads the answers as its own origin. The browser still sends the page's name as ``Host``,
so a loopback server that answers only to loopback Host names (``localhost``, ``127.0.0.1``,
``[::1]``, any port) cannot be read that way. The HTTP worker and the gallery both apply this
rule; each decides when (see their ``loopback_only``).
"""

from __future__ import annotations

import ipaddress
import re

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: ``host[:port]`` and nothing else: a bracketed IPv6 address or an ASCII name, digits for
#: the port. Anything looser (``localhost:1@evil.com``) must not pass for a loopback name.
HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))"
                         r"(?::[0-9]+)?")


def is_loopback(address: str) -> bool:
    """Whether a bind address is loopback: ``localhost`` or a loopback IP address."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str | None:
    """The host of a Host header, lower-cased: ``[::1]:8766`` -> ``::1``, ``A:80`` -> ``a``;
    None when the header is not exactly ``host[:port]``."""
    match = HOST_HEADER.fullmatch(host_header)
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower()


def is_loopback_host(host_header: str) -> bool:
    """Whether a request's Host header names this machine by a loopback name."""
    return host_name(host_header) in LOOPBACK_NAMES
