"""srpc.toml: lookup order, defaults, precedence and validation."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from srpc_core.config import Config, load_config, resolve_host
from srpc_core.errors import ConfigError
from srpc_core.plugins import get_plugins
from srpc_core.transport import TransportSettings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in an empty folder without SRPC_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SRPC_CONFIG", raising=False)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_file() -> None:
    config = load_config()
    assert (config.transport, config.codec, config.host, config.port) == (
        "tcp",
        "json",
        "127.0.0.1",
        5000,
    )
    assert config.timeout == 30.0
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert config.metrics_path == "srpc_server_metrics.log"
    assert config.send_tracebacks is False
    assert config.source == "defaults"


def test_local_file_is_found(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc]\nport = 6001\n")
    config = load_config()
    assert config.port == 6001
    assert config.source == "srpc.toml"


def test_env_var_beats_local_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "srpc.toml", "[srpc]\nport = 6001\n")
    other = write(isolated / "other.toml", "[srpc]\nport = 6002\n")
    monkeypatch.setenv("SRPC_CONFIG", str(other))
    assert load_config().port == 6002


def test_argument_beats_env_var(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRPC_CONFIG", str(write(isolated / "env.toml", "[srpc]\nport = 6002\n")))
    given = write(isolated / "given.toml", "[srpc]\nport = 6003\n")
    assert load_config(given).port == 6003


def test_overrides_beat_the_file(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc]\nhost = '10.0.0.5'\nport = 6001\ntimeout = 5\n")
    config = load_config(host="127.0.0.1", port=7000, timeout=None)
    assert (config.host, config.port, config.timeout) == ("127.0.0.1", 7000, 5.0)


def test_plugin_tables_are_kept(isolated: Path) -> None:
    write(
        isolated / "srpc.toml", "[srpc]\n[srpc.tcp]\nidle_timeout = 9\n[srpc.metrics]\npath = ''\n"
    )
    config = load_config()
    assert config.options("tcp") == {"idle_timeout": 9}
    assert config.options("zmq") == {}
    assert config.metrics_path == ""


def test_unknown_key_names_file_key_and_valid_keys(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc]\nprot = 5000\n")
    with pytest.raises(ConfigError) as error:
        load_config()
    message = str(error.value)
    assert "srpc.toml" in message and "'prot'" in message
    assert "port" in message and "transport" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("port = 'abc'", "port"),
        ("port = 70000", "port"),
        ("port = true", "port"),
        ("timeout = 0", "timeout"),
        ("max_message_bytes = -1", "max_message_bytes"),
        ("transport = 5", "transport"),
        ("send_tracebacks = 'yes'", "send_tracebacks"),
    ],
)
def test_wrong_types_name_file_key_and_expectation(isolated: Path, line: str, key: str) -> None:
    write(isolated / "srpc.toml", f"[srpc]\n{line}\n")
    with pytest.raises(ConfigError, match=rf"srpc\.toml.*{key} = .* is invalid: expected"):
        load_config()


def test_not_toml_is_a_clear_error(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc\nport = \n")
    with pytest.raises(ConfigError, match=r"srpc\.toml: not valid TOML"):
        load_config()


def test_missing_explicit_file_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml.*does not exist"):
        load_config(isolated / "nope.toml")
    monkeypatch.setenv("SRPC_CONFIG", "missing.toml")
    with pytest.raises(ConfigError, match=r"missing\.toml.*SRPC_CONFIG"):
        load_config()


def test_unknown_transport_and_codec_name_file_and_choices(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc]\ntransport = 'carrier-pigeon'\ncodec = 'morse'\n")
    config = load_config()
    plugins = get_plugins()
    with pytest.raises(ConfigError) as error:
        plugins.transport(config.transport, TransportSettings(), config.source)
    assert "srpc.toml" in str(error.value) and "'carrier-pigeon'" in str(error.value)
    assert "tcp" in str(error.value)
    with pytest.raises(ConfigError) as error:
        plugins.codec(config.codec, {}, config.source)
    assert "'morse'" in str(error.value) and "json" in str(error.value)


def test_unknown_key_in_tcp_table_is_an_error(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc.tcp]\nidle_timout = 3\n")
    config = load_config()
    with pytest.raises(ConfigError, match=r"idle_timout.*\[srpc\.tcp\].*idle_timeout"):
        get_plugins().transport("tcp", TransportSettings(config.options("tcp")), config.source)


def test_a_loaded_config_passes_through() -> None:
    config = Config(port=1234)
    assert load_config(config) is config
    assert load_config(config, port=99).port == 99


def test_lan_resolves_to_an_address() -> None:
    assert resolve_host("example.internal") == "example.internal"
    ipaddress.ip_address(resolve_host("lan"))  # raises if it is not an IP address
