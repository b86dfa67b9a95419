"""Miner addresses as the config writes them: ``host:port``, ranges and networks.

``10.0.1.1-10.0.1.254`` and ``10.0.1.1-254`` are inclusive ranges, ``10.0.2.0/24`` a
network's usable hosts; :func:`expand_hosts` turns one ``hosts:`` item into addresses,
refusing typos that would create millions of miners.
"""

from __future__ import annotations

import ipaddress
import re

from cgwatchdog.protocol import DEFAULT_PORT

__all__ = [
    "MAX_HOSTS_PER_RANGE",
    "check_host",
    "default_miner_name",
    "expand_hosts",
    "split_host_port",
]

# A /16 is the largest block a farm plausibly lists in one line; a typo such as /8
# would otherwise quietly create millions of miners.
MAX_HOSTS_PER_RANGE = 65_536


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default) a bare host; ValueError if not."""
    found = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not host:port")
    host = found[1] or found[3]
    port_text = found[2] or found[4]
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} lacks a port; write host:port")
        return check_host(host), default_port
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must lie between 1 and 65535")
    return check_host(host), port


_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
# Dotted-quad IPv4 as ipaddress takes it (ASCII digits, 0-255, no leading zeros): a
# match is an address without ipaddress's work (10,000 hosts: 0.002 s instead of 0.018).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def check_host(value: str) -> str:
    """One host name or IP address (no ranges)."""
    if _IPV4.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if "/" in value or _ip_range(value) is not None:
        raise ValueError(f"{value!r} is a range: list it under hosts:, host: takes one address")
    if re.fullmatch(r"[\d.]+", value) or not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


def _ip_range(spec: str) -> tuple[int, int, int] | None:
    """``a.b.c.d-a.b.c.e`` or ``a.b.c.d-e`` -> (first, last, version); None if not a range."""
    left, dash, right = spec.partition("-")
    if not dash:
        return None
    try:
        first = ipaddress.ip_address(left.strip())
    except ValueError:
        return None  # a host name with a hyphen
    right = right.strip()
    try:
        if right.isdigit() and first.version == 4:
            last_octet = int(right)
            if last_octet > 255:
                raise ValueError
            last = ipaddress.ip_address((int(first) & ~0xFF) | last_octet)
        else:
            last = ipaddress.ip_address(right)
    except ValueError:
        raise ValueError(
            f"{spec!r} is not a range; write 10.0.1.1-10.0.1.254 or 10.0.1.1-254"
        ) from None
    if last.version != first.version:
        raise ValueError(f"{spec!r} mixes IPv4 and IPv6")
    if int(last) < int(first):
        raise ValueError(f"{spec!r} ends before it starts")
    return int(first), int(last), first.version


def _too_many(spec: str, count: int) -> ValueError:
    return ValueError(
        f"{spec!r} expands to {count:,} hosts; one entry may expand to at most "
        f"{MAX_HOSTS_PER_RANGE:,}: split it"
    )


def _ip_strings(first: int, last: int, version: int) -> list[str]:
    if version == 4:  # string building beats ipaddress objects 10x for a /16
        return [
            f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            for n in range(first, last + 1)
        ]
    return [str(ipaddress.IPv6Address(n)) for n in range(first, last + 1)]


def expand_hosts(spec: str) -> list[str]:
    """One ``hosts:`` item -> the hosts it names, in order.

    ``10.0.1.1-10.0.1.254`` and ``10.0.1.1-254`` are inclusive ranges; ``10.0.2.0/24`` a
    network's usable hosts (no network or broadcast address); anything else one host.
    Raises ValueError past MAX_HOSTS_PER_RANGE hosts or for malformed input.
    """
    spec = spec.strip()
    if "/" in spec:
        try:
            net = ipaddress.ip_network(spec)
        except ValueError:
            try:
                loose = ipaddress.ip_network(spec, strict=False)
            except ValueError:
                raise ValueError(f"{spec!r} is not a network such as 10.0.2.0/24") from None
            raise ValueError(f"{spec!r} has host bits set; did you mean {loose}?") from None
        usable = net.num_addresses - (2 if net.version == 4 else 1)
        if usable > MAX_HOSTS_PER_RANGE:
            raise _too_many(spec, usable)
        if net.version == 4 and net.prefixlen <= 30:
            base = int(net.network_address)
            return _ip_strings(base + 1, base + net.num_addresses - 2, 4)
        return [str(host) for host in net.hosts()]
    found = _ip_range(spec)
    if found is None:
        return [check_host(spec)]
    first, last, version = found
    if last - first + 1 > MAX_HOSTS_PER_RANGE:
        raise _too_many(spec, last - first + 1)
    return _ip_strings(first, last, version)


def default_miner_name(host: str, port: int) -> str:
    """A miner's name when the config gives none: its host, with the port if not 4028."""
    if port == DEFAULT_PORT:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
