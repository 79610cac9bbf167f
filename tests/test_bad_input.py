"""Bad input is a feature: every malformed frame or request gets a clear answer (or a closed
connection), and the server goes on serving everyone else."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import pytest
from support import ServerProcess, run_client

CONTROL = b"\x00srpc"


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame, or None if the server closed the connection."""
    reader = sock.makefile("rb")
    header = reader.read(4)
    if len(header) < 4:
        return None
    return reader.read(struct.unpack(">I", header)[0])


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def control(payload: bytes | None) -> dict[str, object]:
    assert payload is not None and payload.startswith(CONTROL), payload
    fields = json.loads(payload[len(CONTROL) :])
    assert isinstance(fields, dict)
    return fields


def hello(codec: str = "json", version: int = 2, service: str = "CalcInterface") -> bytes:
    return (
        CONTROL
        + json.dumps(
            {"v": version, "hello": True, "codec": codec, "transport": "tcp", "service": service}
        ).encode()
    )


def open_session(sock: socket.socket, **hello_fields: object) -> str:
    """Say hello on `sock`; return the session token the server issued."""
    sock.sendall(frame(hello(**hello_fields)))  # type: ignore[arg-type]
    reply = control(read_frame(sock))
    assert reply["ok"] is True, reply
    assert isinstance(reply["session"], str)
    return reply["session"]


def send(sock: socket.socket, request: object) -> bytes:
    sock.sendall(frame(json.dumps(request).encode()))
    reply = read_frame(sock)
    assert reply is not None
    return reply


def call(sock: socket.socket, request: list[object]) -> list[object]:
    """Send `request` ([id, procedure, args, kwargs]) in a fresh session; return the response."""
    session = open_session(sock)
    response = json.loads(send(sock, [request[0], session, *request[1:]]))
    assert isinstance(response, list)
    return response


def assert_still_serving(server: ServerProcess) -> None:
    """A normal client in another process still gets answers."""
    result = run_client(
        server.project,
        "from srpc_calc_client_stub import SrpcCalcClientStub\n"
        f"print(SrpcCalcClientStub('127.0.0.1', {server.port}).add(4, 2))\n",
    )
    assert result.stdout.strip() == "6", result.stderr
    assert server.alive()


def test_garbage_bytes_get_an_error_and_the_server_survives(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(frame(os.urandom(64).replace(b"\x00", b"\x01")))
        error = control(read_frame(sock))
        assert error["ok"] is False
        assert "could not decode the request with codec 'json'" in str(error["error"])
        # the same connection keeps working after a bad message
        assert call(sock, [1, "add", [1, 2], {}]) == [1, 0, 3]
    assert_still_serving(calc_server)


def test_malformed_request_shape_is_explained(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        session = open_session(sock)
        for bad in (
            {"method": "add"},
            [1, "add"],
            ["x", session, "add", [], {}],
            [1, session, "add", 5, {}],
            [1, session, "add", [], {}, "not a map"],
            [1, session, "add", [], []],
        ):
            error = control(send(sock, bad))
            assert "expected [id, session, procedure, args, kwargs]" in str(error["error"])
            assert error["code"] == "malformed"
    assert_still_serving(calc_server)


def test_truncated_frame_closes_only_that_connection(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(struct.pack(">I", 100) + b"[1, ")  # promises 100 bytes, sends 4, hangs up
    assert_still_serving(calc_server)


def test_oversized_frame_is_refused_before_reading_it(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(struct.pack(">I", 2**31))  # 2 GiB announced; nothing allocated for it
        error = control(read_frame(sock))
        assert "exceeds max_message_bytes" in str(error["error"])
        assert read_frame(sock) is None  # then the server closes the connection
    assert_still_serving(calc_server)


def test_unknown_method_names_what_is_served(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        response = call(sock, [7, "launch_missiles", [], {}])
    assert response[:2] == [7, 1]
    error = response[2]
    assert isinstance(error, dict)
    assert error["type"] == "UnknownProcedureError"
    assert "no procedure 'launch_missiles'" in error["message"] and "add" in error["message"]
    assert_still_serving(calc_server)


@pytest.mark.parametrize("name", ["_private", "__class__", "__init__", "__reduce__", "mro"])
def test_only_interface_methods_can_be_called(calc_server: ServerProcess, name: str) -> None:
    with connect(calc_server) as sock:
        response = call(sock, [1, name, [], {}])
    assert response[1] == 1
    assert response[2]["type"] == "UnknownProcedureError"  # type: ignore[index]


def test_wrong_arguments_from_a_raw_client_are_a_type_error(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        too_many = call(sock, [1, "add", [1, 2, 3], {}])
        unknown_kw = call(sock, [2, "add", [1], {"c": 2}])
    for response in (too_many, unknown_kw):
        assert response[1] == 1
        assert response[2]["type"] == "TypeError"  # type: ignore[index]
        assert "add(a: float, b: float)" in response[2]["message"]  # type: ignore[index]
    assert_still_serving(calc_server)


def test_codec_mismatch_names_both_sides(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(frame(hello(codec="cbor")))
        reply = control(read_frame(sock))
    assert reply["ok"] is False
    assert "client uses 'cbor', server uses 'json'" in str(reply["error"])


def test_protocol_version_mismatch_names_both_sides(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(frame(hello(version=99)))
        reply = control(read_frame(sock))
    assert "client speaks 99, server speaks 2" in str(reply["error"])
    assert reply["code"] == "version"


def test_a_version_1_request_gets_a_version_error(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        error = control(send(sock, [1, "add", [1, 2], {}]))
    assert error["code"] == "version" and "protocol version 1" in str(error["error"])
    assert_still_serving(calc_server)


def test_nothing_runs_without_a_hello(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        for token in ("", "forged.token", "x." + "0" * 32, "é." + "é" * 32):
            error = control(send(sock, [1, token, "add", [1, 2], {}]))
            assert error["code"] == "session" and "send the srpc hello first" in str(error["error"])
            assert error["id"] == 1


def test_nothing_runs_after_a_refused_hello(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(frame(hello(codec="cbor")))
        refusal = control(read_frame(sock))
        assert refusal["ok"] is False and "session" not in refusal
        error = control(send(sock, [1, "", "add", [1, 2], {}]))
    assert error["code"] == "session"


def test_a_token_from_another_service_is_refused(calc_server: ServerProcess) -> None:
    from srpc_core.session import SessionKeeper, default_session_key

    other = SessionKeeper(default_session_key("BankInterface", "json")).open().token
    with connect(calc_server) as sock:
        error = control(send(sock, [1, other, "add", [1, 2], {}]))
    assert error["code"] == "session"


def test_a_token_works_on_any_connection_and_server_of_the_service(
    calc_server: ServerProcess,
) -> None:
    with connect(calc_server) as first:
        session = open_session(first)
    with connect(calc_server) as second:  # no hello on this connection: the token suffices
        assert json.loads(send(second, [5, session, "add", [1, 2], {}])) == [5, 0, 3]


def test_a_call_whose_deadline_passed_is_not_started(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        session = open_session(sock)
        response = json.loads(send(sock, [3, session, "add", [1, 2], {}, {"timeout": 0}]))
    assert response[:2] == [3, 1] and response[2]["type"] == "CallTimeoutError"


def test_wrong_service_is_refused_at_hello(calc_server: ServerProcess) -> None:
    with connect(calc_server) as sock:
        sock.sendall(frame(hello(service="BankInterface")))
        reply = control(read_frame(sock))
    assert "client expects 'BankInterface', server serves 'CalcInterface'" in str(reply["error"])


def test_codec_mismatch_through_real_clients(calc_server: ServerProcess) -> None:
    (calc_server.project / "client.toml").write_text("[srpc]\ncodec = 'cbor'\n")
    result = run_client(
        calc_server.project,
        "import srpc_core\n"
        "from srpc_calc_client_stub import SrpcCalcClientStub\n"
        f"calc = SrpcCalcClientStub('127.0.0.1', {calc_server.port}, config='client.toml')\n"
        "try:\n    calc.add(1, 2)\n"
        "except srpc_core.MismatchError as e:\n    print('MISMATCH', e)\n",
    )
    assert "MISMATCH" in result.stdout, result.stderr
    assert "client uses 'cbor', server uses 'json'" in result.stdout


def test_many_bad_connections_do_not_exhaust_the_server(calc_server: ServerProcess) -> None:
    for _ in range(50):
        with connect(calc_server) as sock:
            sock.sendall(b"\xff\xff")
    assert_still_serving(calc_server)


def test_a_silent_connection_is_closed_after_idle_timeout(calc_dir: Path) -> None:
    config = calc_dir / "idle.toml"
    config.write_text("[srpc.tcp]\nidle_timeout = 0.3\n")
    with ServerProcess(calc_dir, "calc", config=config) as server, connect(server) as sock:
        sock.settimeout(20)  # the server must hang up long before this
        assert sock.recv(1) == b""  # EOF: the server closed the silent connection
        assert_still_serving(server)
