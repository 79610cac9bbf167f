"""The nats transport's options, its missing-dependency error and its flow control."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from nats_support import NatsServer, nats_server  # noqa: F401  (a fixture)

from srpc_core.errors import ConfigError, MissingDependencyError
from srpc_core.options import PluginOptions
from srpc_core.transport import Handler, TransportSettings
from srpc_plugins.nats import NatsTransport

pytest.importorskip("nats", reason="needs nats-py: pip install 'srpclib[nats]'")


def transport(**options: Any) -> NatsTransport:
    table = PluginOptions(options, table="srpc.nats", source="srpc.toml")
    return NatsTransport(TransportSettings(table, 1 << 20, 10.0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token": "abc"}, r"\[srpc.nats\] token is refused: secrets do not belong.*token_env"),
        ({"password": "abc"}, "password is refused.*password_env"),
        ({"subject": "srpc.*"}, "subject = 'srpc.\\*' is invalid: expected a NATS subject"),
        ({"subject": "a..b"}, "subject = 'a..b' is invalid"),
        ({"servers": []}, "servers = \\[\\] is invalid: expected a non-empty list of NATS URLs"),
        ({"servers": ["127.0.0.1:4222"]}, "servers = .* is invalid"),
        ({"max_concurrent": 0}, "max_concurrent = 0 is invalid"),
        ({"max_concurent": 4}, "unknown key 'max_concurent'.*did you mean 'max_concurrent'"),
        ({"token_env": "SRPC_TEST_UNSET_VAR"}, "SRPC_TEST_UNSET_VAR is not"),
        ({"user_env": "HOME"}, "expected user_env and password_env together"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "does not exist"),
        ({"tls_cert": __file__}, "tls_cert and tls_key together"),
        ({"token_env": "HOME", "creds_file": __file__}, "one way to authenticate"),
    ],
)
def test_bad_options_are_config_errors_naming_file_table_and_key(
    options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SRPC_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError, match=message) as refused:
        transport(**options)
    assert str(refused.value).startswith("srpc.toml: ")


def test_secrets_come_from_the_environment_variables_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_USER", "ann")
    monkeypatch.setenv("NATS_PASSWORD", "pw")
    built = transport(user_env="NATS_USER", password_env="NATS_PASSWORD")
    assert built.options.connect_arguments() == {"user": "ann", "password": "pw"}
    assert "pw" not in repr(built.options)
    monkeypatch.setenv("NATS_TOKEN", "t0k")
    assert transport(token_env="NATS_TOKEN").options.connect_arguments() == {"token": "t0k"}
    assert transport(creds_file=__file__).options.connect_arguments() == {
        "user_credentials": __file__
    }
    assert transport(nkey_seed_file=__file__).options.connect_arguments() == {
        "nkeys_seed": __file__
    }


def test_the_subject_is_srpc_dot_the_interface_unless_set() -> None:
    assert transport().subject("CalcInterface") == "srpc.CalcInterface"
    assert transport(subject="billing.calc").subject("CalcInterface") == "billing.calc"
    with pytest.raises(ConfigError, match=r"set \[srpc.nats\] subject"):
        transport().subject("")


def test_without_nats_py_selecting_it_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'srpclib\[nats\]'"):
        transport()
    assert NatsTransport.requires == {"nats": "pip install 'srpclib[nats]'"}


@contextmanager
def listening(url: str, subject: str, handler: Handler, **options: Any) -> Iterator[Any]:
    built = transport(servers=[url], subject=subject, **options)
    listener = built.listen("", 0, handler)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        listener.shutdown()
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize("flow_control", [True, False])
def test_a_busy_server_hands_calls_back_to_nats_only_with_flow_control(
    flow_control: bool,
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Server "busy" runs one call at a time, server "roomy" 128: once a held call takes the
    # busy one's slot, every call landing there is one an idle server could run.
    subject = f"srpc.flow.{tmp_path.name}"
    release = threading.Event()
    entries: queue.Queue[str] = queue.Queue()

    def handler_of(name: str) -> Handler:
        def handle(message: bytes) -> bytes:
            if message == b"hold":
                entries.put(name)
                release.wait(60)
            return name.encode()

        return handle

    mode = {"flow_control": flow_control}
    with (
        listening(nats_server.url, subject, handler_of("busy"), max_concurrent=1, **mode) as busy,
        listening(nats_server.url, subject, handler_of("roomy"), max_concurrent=128, **mode),
    ):
        client = transport(servers=[nats_server.url], subject=subject)

        def request(message: bytes) -> bytes:
            channel = client.connect("", 0, 30)
            try:
                return channel.request(message, 30)
            finally:
                channel.close()

        calls = 40
        with ThreadPoolExecutor(calls) as holders, ThreadPoolExecutor(calls) as pool:
            held = [holders.submit(request, b"hold")]
            while entries.get(timeout=30) != "busy":  # until the busy server holds one
                held.append(holders.submit(request, b"hold"))
            quick = [pool.submit(request, b"quick") for _ in range(calls)]
            # Wait for calls to come back while the slot is still taken. With flow control a
            # call stays on the busy server only if NATS picks it 4 times running (1 in 16);
            # without it, about half of them wait there for the release.
            enough = 30 if flow_control else 10
            for done, _ in enumerate(as_completed(quick), start=1):
                if done == enough:
                    break
            release.set()
            answers = [future.result(30) for future in quick]
            assert {future.result(30) for future in held} <= {b"busy", b"roomy"}
        assert set(answers) <= {b"busy", b"roomy"} and len(answers) == calls
    if flow_control:
        # Calls landing on the busy server (about half of them) went back to NATS (30 calls
        # came back while it was busy: none of them landing there first has a chance of 2**-30).
        assert busy.forwarded > 0
    else:
        assert busy.forwarded == 0
