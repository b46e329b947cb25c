"""Media URLs cannot reach the server's own network: non-public addresses are refused unless allowed,
the address checked is the one connected to (DNS rebinding), and every fetch failure reads the same."""
import http.server
import socket
import threading

import httpx
import pytest

from qwen35.planner.errors import InputError
from qwen35.runtime.vision import MediaPolicy, load_image
from qwen35.runtime.vision.http_fetch import address_allowed

PUBLIC_IP = "93.184.216.34"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1", "ff02::1",
])
def test_loopback_private_link_local_and_embedded_addresses_are_refused(address):
    assert not address_allowed(address)


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(address)


def test_allowed_networks_open_what_they_name():
    assert address_allowed("10.1.2.3", ["10.0.0.0/8"]) and not address_allowed("10.1.2.3", ["192.168.0.0/16"])
    assert address_allowed("::ffff:127.0.0.1", ["127.0.0.0/8"])
    assert address_allowed("127.0.0.1", ["0.0.0.0/0"]) and address_allowed("::1", ["::/0"])


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    _Counting.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_this_machine_is_refused_by_default_and_never_contacted(local_server):
    port = local_server.server_port
    for url in (f"http://127.0.0.1:{port}/metrics", f"http://localhost:{port}/metrics",
                f"http://[::ffff:127.0.0.1]:{port}/x"):
        with pytest.raises(InputError, match="could not fetch"):
            load_image(url, MediaPolicy())
    assert _Counting.hits == 0, "the refused address was connected to"
    with pytest.raises(InputError, match="could not fetch"):  # allowed, reached, and its 404 is a failure
        load_image(f"http://127.0.0.1:{port}/x", MediaPolicy(allowed_networks=("127.0.0.0/8",)))
    assert _Counting.hits == 1


def test_the_connection_goes_to_the_address_that_was_checked():
    """A rebinding resolver answers public first, loopback after: only the first answer is used."""
    answers = [[PUBLIC_IP], ["127.0.0.1"]]
    asked = []

    def rebinding(host, port):
        asked.append((host, port))
        return answers[min(len(asked) - 1, 1)]

    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(404)

    with pytest.raises(InputError):
        load_image("https://rebind.test/cat.png", MediaPolicy(), transport=httpx.MockTransport(handler),
                   resolve=rebinding)
    assert asked == [("rebind.test", 443)]
    (request,) = seen
    assert request.url.host == PUBLIC_IP and request.headers["host"] == "rebind.test"
    assert request.extensions["sni_hostname"] == "rebind.test", "TLS checks the certificate against the name"


def test_a_host_with_any_private_answer_is_refused_and_redirects_are_checked():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(302, headers={"location": "http://127.0.0.1/admin"})

    with pytest.raises(InputError, match="could not fetch"):
        load_image("https://mixed.test/a.png", MediaPolicy(), transport=httpx.MockTransport(handler),
                   resolve=lambda host, port: [PUBLIC_IP, "10.0.0.7"])
    assert not seen
    with pytest.raises(InputError, match="could not fetch"):
        load_image("https://media.test/a.png", MediaPolicy(), transport=httpx.MockTransport(handler),
                   resolve=lambda host, port: [PUBLIC_IP] if host == "media.test" else ["127.0.0.1"])
    assert [request.headers["host"] for request in seen] == ["media.test"], "the redirect target was not fetched"


def test_every_fetch_failure_gives_the_same_text():
    """Refused address, DNS failure, connection refused, timeout, HTTP status, size, redirect loop: one message."""
    url = "https://media.test/a.png"

    def answer(response=None, error=None):
        def handler(request):
            if error is not None:
                raise error("failed", request=request)
            return response
        return httpx.MockTransport(handler)

    def no_such_host(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    public = lambda host, port: [PUBLIC_IP]  # noqa: E731
    policy = MediaPolicy(max_image_bytes=100)
    cases = [
        (answer(httpx.Response(200)), lambda host, port: ["192.168.0.10"]),
        (answer(httpx.Response(200)), no_such_host),
        (answer(error=httpx.ConnectError), public),
        (answer(error=httpx.ConnectTimeout), public),
        (answer(error=httpx.ReadTimeout), public),
        (answer(httpx.Response(404)), public),
        (answer(httpx.Response(401)), public),
        (answer(httpx.Response(500)), public),
        (answer(httpx.Response(200, content=b"x" * 101)), public),
        (answer(httpx.Response(301, headers={"location": url})), public),
        (answer(httpx.Response(302, headers={"location": "ftp://media.test/a"})), public),
    ]
    messages = set()
    for transport, resolve in cases:
        with pytest.raises(InputError) as caught:
            load_image(url, policy, transport=transport, resolve=resolve)
        messages.add(caught.value.one_line())
    assert len(messages) == 1, messages
    assert "could not fetch https://media.test/a.png" in messages.pop()
