"""The fault proxy between a client and a real HTTP server on loopback."""

from __future__ import annotations

import http.client
import http.server
import re
import threading
from collections.abc import Iterator

import pytest

from tunegate_cluster.fault_proxy import Fault, FaultProxy

BODY = b"x" * 200_000  # several chunks, so a fault can land mid-response


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FaultProxy("127.0.0.1", server.server_address[1], slow_seconds=1.0) as running:
        yield running
    server.shutdown()


def _get(proxy: FaultProxy, timeout: float = 5, path: str = "/") -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def test_without_a_fault_the_bytes_pass_unchanged(proxy: FaultProxy) -> None:
    assert _get(proxy) == BODY


def test_down_refuses_until_the_server_is_back_on_the_same_port(proxy: FaultProxy) -> None:
    proxy.inject(Fault.DOWN)
    with pytest.raises(ConnectionRefusedError):
        _get(proxy)
    proxy.inject(Fault.NONE)
    assert _get(proxy) == BODY


def test_reset_drops_new_connections(proxy: FaultProxy) -> None:
    proxy.inject(Fault.RESET)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _get(proxy)
    proxy.inject(Fault.NONE)
    assert _get(proxy) == BODY


def test_slow_outlasts_a_client_timeout(proxy: FaultProxy) -> None:
    proxy.inject(Fault.SLOW)
    with pytest.raises(TimeoutError):
        _get(proxy, timeout=0.3)


def test_going_down_cuts_a_response_in_flight(proxy: FaultProxy) -> None:
    proxy.inject(Fault.SLOW)  # hold the response in the proxy
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    connection.request("GET", "/")
    response = connection.getresponse()
    proxy.inject(Fault.DOWN)
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()
    connection.close()


def test_an_armed_fault_cuts_the_matching_request_and_only_from_then_on(
    proxy: FaultProxy,
) -> None:
    tripped = threading.Event()
    proxy.arm(re.compile(rb"GET /trip "), Fault.DOWN, tripped)
    assert _get(proxy, path="/other") == BODY and not tripped.is_set()
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _get(proxy, path="/trip")
    assert tripped.is_set()
    with pytest.raises(ConnectionRefusedError):
        _get(proxy)
    proxy.inject(Fault.NONE)
    assert _get(proxy, path="/trip") == BODY  # fired once
