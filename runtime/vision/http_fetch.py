"""http(s) media downloads that a request cannot point at the server's own network.

Each hop (the URL, then every redirect) is resolved once, every address it resolves to is
checked, and the connection goes to the checked address: the URL's host stays in the Host
header and in TLS (SNI and the certificate check), so a DNS answer that changes between the
check and the connect (rebinding) never reaches what the check refused. Refused unless the
operator lists their network in MediaPolicy.allowed_networks: loopback, private (RFC 1918,
unique-local), link-local (cloud metadata at 169.254.169.254), shared, reserved, unspecified
and multicast addresses, also when an IPv6 address embeds one (::ffff:a.b.c.d, 6to4).

Once fetching starts, every failure (refused address, DNS, connect, TLS, HTTP status, redirect,
size, timeout) answers the client with one text, so error messages cannot map a network or
scan ports; the reason goes to the log. Environment proxies are not used: through a proxy the
check would see only the proxy.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import httpx

from qwen35.planner.errors import InputError

if TYPE_CHECKING:
    from qwen35.runtime.vision.media import MediaPolicy

logger = logging.getLogger("qwen35.media")

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP addresses


class _Refused(Exception):
    """Why a fetch failed: for the log, never for the client."""


def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def address_allowed(address: str, allowed_networks: Iterable[str] = ()) -> bool:
    """Whether media may be fetched from an IP address: a public unicast one, or one the operator allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    if any(ip in ipaddress.ip_network(network, strict=False) for network in allowed_networks):
        return True
    return ip.is_global and not ip.is_multicast


def short_url(url: str) -> str:
    """A URL cut to 80 characters for messages."""
    return url if len(url) <= 80 else url[:77] + "..."


def host_allowed(host: str, allowed_domains: tuple[str, ...] | None) -> bool:
    """Whether a host name is on the operator's domain list (a domain covers its subdomains); None: any."""
    host = host.lower()
    return allowed_domains is None or any(host == domain or host.endswith("." + domain) for domain in allowed_domains)


def http_bytes(url: str, policy: MediaPolicy, max_bytes: int, transport: httpx.BaseTransport | None = None,
               resolve: Resolver = system_resolve) -> bytes:
    """The body behind an http(s) URL under the policy (a MediaPolicy); one InputError text for every failure."""
    if not policy.allow_http:
        raise InputError("fetching media over http(s) is disabled on this server", "send the file as a data: URL")
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as error:
        raise InputError(f"the media URL {short_url(url)} is malformed ({error})", "send a valid http(s) URL") from None
    if not host_allowed(host, policy.allowed_domains):
        raise InputError(f"media host {host!r} is not on this server's allowed list",
                         f"fetch from {', '.join(policy.allowed_domains) or 'no host'}, or send a data: URL")
    try:
        return _download(url, policy, max_bytes, transport, resolve)
    except (_Refused, httpx.HTTPError, httpx.InvalidURL, OSError, UnicodeError, ValueError) as reason:
        logger.info("media fetch of %s failed: %s", short_url(url), reason or type(reason).__name__)
        raise InputError(f"could not fetch {short_url(url)}",
                         f"media URLs must be public http(s) addresses that answer within {policy.timeout_s:g}s "
                         f"with at most {max_bytes} bytes; or send the file as a data: URL") from None


def _download(url: str, policy: MediaPolicy, max_bytes: int, transport: httpx.BaseTransport | None, resolve: Resolver) -> bytes:
    deadline = time.monotonic() + policy.timeout_s
    with httpx.Client(transport=transport, timeout=policy.timeout_s, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            target = httpx.URL(url)
            if target.scheme not in ("http", "https"):
                raise _Refused(f"redirected to a {target.scheme or 'relative'} URL")
            if not host_allowed(target.host, policy.allowed_domains):
                raise _Refused(f"redirected to {target.host!r}, not on the allowed list")
            request = _pinned_request(client, target, policy.allowed_networks, resolve)
            response = client.send(request, stream=True)
            try:
                if response.is_redirect:
                    url = str(target.join(response.headers["location"]))
                    continue
                return _body(response, max_bytes, deadline)
            finally:
                response.close()
        raise _Refused(f"more than {policy.max_redirects} redirects")


def _pinned_request(client: httpx.Client, target: httpx.URL, allowed_networks: tuple[str, ...],
                    resolve: Resolver) -> httpx.Request:
    """A GET to the checked address of the URL's host, carrying the host name for HTTP and TLS."""
    host = target.raw_host.decode("ascii")
    port = target.port or (443 if target.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise _Refused(f"{host} has no address")
    refused = [address for address in addresses if not address_allowed(address, allowed_networks)]
    if refused:
        raise _Refused(f"{host} resolves to {refused[0]}, which is not a public address")
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    return client.build_request("GET", target.copy_with(host=addresses[0].split("%", 1)[0]),
                                headers={"Host": target.netloc.decode("ascii")}, extensions=extensions)


def _body(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    if response.status_code >= 400:
        raise _Refused(f"HTTP {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Refused(f"{declared} bytes, over the {max_bytes}-byte limit")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _Refused(f"over the {max_bytes}-byte limit")
        if time.monotonic() > deadline:
            raise _Refused("the download deadline passed")
        chunks.append(chunk)
    return b"".join(chunks)
