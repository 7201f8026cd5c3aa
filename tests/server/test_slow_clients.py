"""Slow clients cannot hold a connection: a request head must arrive within the header timeout
(the connection is closed), a body within the body timeout (408). Against a real uvicorn."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests._helpers import ServerProcess, stub_backed_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("slow")
    env = {"EQS_REWARD_HTTP_HEADER_TIMEOUT_S": "1", "EQS_REWARD_HTTP_BODY_TIMEOUT_S": "1"}
    with stub_backed_service(tmp, **env) as running:
        yield running


def connect(service: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer: its head and its Content-Length of body (TCP may deliver them in
    separate reads; one recv was seen to return the head alone)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_head_that_never_ends_is_cut_off(service: ServerProcess) -> None:
    sock = connect(service)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
    for _ in range(3):
        time.sleep(0.3)
        sock.sendall(b"X-Drip: 1\r\n")
    assert sock.recv(1024) == b""  # closed by the server
    assert 0.9 < time.monotonic() - started < 5
    sock.close()


def test_an_idle_connection_is_cut_off(service: ServerProcess) -> None:
    sock = connect(service)
    started = time.monotonic()
    assert sock.recv(1024) == b""
    assert time.monotonic() - started < 5
    sock.close()


def test_a_body_that_never_arrives_answers_408(service: ServerProcess) -> None:
    with connect(service) as sock:
        sock.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"items":'
        )
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_a_prompt_client_is_served_on_a_kept_alive_connection(service: ServerProcess) -> None:
    sock = connect(service)
    for _ in range(2):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
    sock.close()
