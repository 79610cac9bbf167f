"""srpc.toml: lookup order, defaults, precedence and validation; nothing is silently ignored."""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import pytest
from support import PYTHON, calc_project, child_env

from srpc_core import Client, Server
from srpc_core.config import METRICS_OPTIONS, Config, load_config, resolve_host
from srpc_core.errors import ConfigError
from srpc_core.options import Option, PluginOptions
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.transport import TransportSettings
from srpc_plugins.tcp import TcpTransport
from srpc_plugins.zmq import ZmqOptions


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


def test_the_config_knows_which_settings_were_given(isolated: Path) -> None:
    """Transports may treat srpc's defaults differently from chosen values (NATS lowers the
    default max_message_bytes to its max_payload, but refuses a chosen one above it)."""
    assert load_config().explicit == frozenset()
    write(isolated / "srpc.toml", "[srpc]\nport = 6001\nmax_message_bytes = 1024\n")
    assert load_config().explicit == {"port", "max_message_bytes"}
    assert load_config(timeout=2).explicit == {"port", "max_message_bytes", "timeout"}
    assert Config().explicit is None  # built in code: every setting counts as given
    plugins = get_plugins()
    _, given = plugins.for_config(load_config())
    assert given.settings.max_message_bytes_given
    (isolated / "srpc.toml").unlink()
    _, default = plugins.for_config(load_config())
    assert not default.settings.max_message_bytes_given
    _, coded = plugins.for_config(Config())
    assert coded.settings.max_message_bytes_given


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
    write(isolated / "srpc.toml", "[srpc]\nhost = 'localhost'\nport = 6001\ntimeout = 5\n")
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


# -- nothing in srpc.toml is silently ignored ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[srcp]\nport = 6000\n", r"unknown table \[srcp\] \(did you mean \[srpc\]\?\).*\[srpc\]"),
        ("[server]\nport = 6000\n", r"unknown table \[server\]; the only valid .* is \[srpc\]"),
        ("port = 6000\n", r"the key 'port' is outside any table; put it under \[srpc\]"),
        ("", r"there is no \[srpc\] table"),
        ("# only a comment\n", r"there is no \[srpc\] table"),
    ],
)
def test_a_file_without_a_srpc_table_is_refused(isolated: Path, text: str, expected: str) -> None:
    write(isolated / "srpc.toml", text)
    with pytest.raises(ConfigError, match=rf"^srpc\.toml: {expected}"):
        load_config()


def test_a_misspelt_plugin_table_names_the_valid_tables(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc]\n[srpc.metrcs]\npath = ''\n")
    config = load_config()  # only the plugins know which tables exist
    with pytest.raises(ConfigError) as error:
        get_plugins().for_config(config)
    message = str(error.value)
    assert message.startswith("srpc.toml: unknown table [srpc.metrcs]")
    assert "(did you mean [srpc.metrics]?)" in message
    for table in ("auth", "cbor", "json", "metrics", "tcp", "zmq"):
        assert f"[srpc.{table}]" in message


def test_every_registered_name_is_a_valid_table(isolated: Path) -> None:
    names = ("tcp", "zmq", "nats", "json", "cbor", "msgpack", "metrics")
    tables = "".join(f"[srpc.{name}]\n" for name in names)
    (isolated / "secret").write_text("a shared secret of at least sixteen bytes")
    auth = "[srpc.auth]\nsecret_file = 'secret'\n"  # an empty [srpc.auth] is an error of its own
    write(isolated / "srpc.toml", "[srpc]\n" + tables + auth)
    get_plugins().for_config(load_config())


def test_a_table_named_after_a_plugin_is_valid() -> None:
    plugins = Plugins({"audit": AuditPlugin()})
    plugins.for_config(Config(tables={"audit": {"level": 1}}))
    with pytest.raises(ConfigError, match=r"^unknown table \[srpc\.audti\] .*\[srpc\.audit\]"):
        plugins.for_config(Config(tables={"audti": {"level": 1}}))


class AuditPlugin:
    """A plugin that offers no transport or codec, only its name (and so its table)."""


def test_a_setting_written_as_a_table_is_refused(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc.port]\nvalue = 1\n")
    with pytest.raises(ConfigError, match=r"^srpc\.toml: \[srpc\] port = .* is invalid"):
        load_config()


# -- [srpc.metrics] ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("flush_interval = -1", r"flush_interval = -1 is invalid: expected a number greater"),
        ("flush_interval = 0", r"flush_interval = 0 is invalid: expected a number greater"),
        ("flush_interval = 'often'", r"flush_interval = 'often' is invalid"),
        ("flush_interval = true", r"flush_interval = true is invalid"),
        ("path = 5", r"path = 5 is invalid: expected a file path"),
        ("pth = 'x.log'", r"unknown key 'pth' in \[srpc\.metrics\] \(did you mean 'path'\?\)"),
    ],
)
def test_the_metrics_table_is_checked(isolated: Path, line: str, expected: str) -> None:
    write(isolated / "srpc.toml", f"[srpc.metrics]\n{line}\n")
    with pytest.raises(ConfigError, match=rf"^srpc\.toml: (\[srpc\.metrics\] )?{expected}"):
        load_config()


def test_the_metrics_table_values(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc.metrics]\npath = 'm.log'\nflush_interval = 2\n")
    config = load_config()
    assert config.metrics_path == "m.log"
    assert config.options("metrics").check(METRICS_OPTIONS) == {
        "path": "m.log",
        "flush_interval": 2.0,
    }


# -- [srpc.tcp], through real servers and clients ---------------------------------------------


class EchoInterface(ABC):
    @abstractmethod
    def echo(self, text: str) -> str: ...


class Echo(EchoInterface):
    def echo(self, text: str) -> str:
        return text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "idle_timeout = 'abc'",
            "idle_timeout = 'abc' is invalid: expected a number greater than 0 (seconds a "
            "server keeps a silent connection open; overrides [srpc] idle_timeout)",
        ),
        ("idle_timeout = -1", "idle_timeout = -1 is invalid: expected a number greater than 0"),
        ("idle_timeout = 0", "idle_timeout = 0 is invalid: expected a number greater than 0"),
        ("idle_timeout = true", "idle_timeout = true is invalid"),
        ("backlog = 1.5", "backlog = 1.5 is invalid: expected an integer from 1 to 65535"),
        ("backlog = 0", "backlog = 0 is invalid: expected an integer from 1 to 65535"),
    ],
)
def test_a_bad_tcp_option_stops_the_server_naming_the_file(
    isolated: Path, line: str, expected: str
) -> None:
    write(isolated / "srpc.toml", f"[srpc]\nport = 0\n[srpc.tcp]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        Server(EchoInterface, Echo())
    assert str(error.value).startswith(f"srpc.toml: [srpc.tcp] {expected}")


def test_a_bad_tcp_option_stops_the_client_too(isolated: Path) -> None:
    config = write(isolated / "client.toml", "[srpc.tcp]\nidle_timeout = 'abc'\n")
    with pytest.raises(ConfigError, match=rf"^{config}: \[srpc\.tcp\] idle_timeout = 'abc'"):
        Client(EchoInterface, config=config)


def test_good_tcp_options_reach_the_listener(isolated: Path) -> None:
    write(
        isolated / "srpc.toml",
        "[srpc]\nport = 0\n[srpc.tcp]\nidle_timeout = 7\nbacklog = 16\n[srpc.metrics]\npath = ''\n",
    )
    server = Server(EchoInterface, Echo())
    assert isinstance(server.transport, TcpTransport)
    assert (server.transport.idle_timeout, server.transport.backlog) == (7.0, 16)
    assert isinstance(server.transport.idle_timeout, float)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert server.wait_until_serving(10)
        client = Client(EchoInterface, port=server.port)
        try:
            assert client.call("echo", ("hi",), {}) == "hi"
        finally:
            client.close()
    finally:
        server.stop()
        thread.join(10)


def test_a_real_server_process_with_a_bad_option_exits_naming_the_file(tmp_path: Path) -> None:
    project = calc_project(tmp_path)
    write(project / "srpc.toml", "[srpc]\nport = 0\n\n[srpc.tcp]\nidle_timeout = 'abc'\n")
    result = subprocess.run(
        [
            PYTHON,
            "-c",
            "from srpc_calc_server_stub import SrpcCalcServerStub\nSrpcCalcServerStub().start()\n",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode != 0
    assert "srpc.toml: [srpc.tcp] idle_timeout = 'abc' is invalid" in result.stderr
    assert "serving" not in result.stdout


# -- srpc_core.options: the checker plugin authors use ----------------------------------------

SPEC = {
    "mode": Option(str, default="bind", choices=("bind", "connect"), help="how to reach peers"),
    "servers": Option(list[str], help="NATS server URLs"),
    "ratio": Option(float, default=0.5, minimum=0, maximum=1, exclusive_maximum=True),
    "retries": Option(int, default=3, minimum=0),
    "verbose": Option(bool, default=False),
    "url": Option(
        str, default="", check=lambda url: url.startswith("nats://"), expected="a nats:// URL"
    ),
}


def plugin_table(isolated: Path, body: str) -> PluginOptions:
    write(isolated / "srpc.toml", f"[srpc.demo]\n{body}\n")
    options = load_config().options("demo")
    assert (options.table, options.source, options.name) == ("srpc.demo", "srpc.toml", "demo")
    return options


def test_check_fills_in_defaults_and_converts(isolated: Path) -> None:
    options = plugin_table(isolated, "servers = ['nats://a:4222']\nratio = 0")
    assert options.check(SPEC) == {
        "mode": "bind",
        "servers": ["nats://a:4222"],
        "ratio": 0.0,
        "retries": 3,
        "verbose": False,
        "url": "",
    }
    assert isinstance(options.check(SPEC)["ratio"], float)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "servers = []\nmode = 'listen'",
            "mode = 'listen' is invalid: expected one of 'bind', 'connect' (how to reach peers)",
        ),
        (
            "servers = ['a', 2]",
            "servers = ['a', 2] is invalid: expected a list of strings (NATS server URLs)",
        ),
        (
            "servers = []\nratio = 1",
            "ratio = 1 is invalid: expected a number of at least 0 and less than 1",
        ),
        (
            "servers = []\nratio = true",
            "ratio = true is invalid: expected a number of at least 0 and less than 1",
        ),
        (
            "servers = []\nretries = -1",
            "retries = -1 is invalid: expected an integer of at least 0",
        ),
        (
            "servers = []\nretries = 2.0",
            "retries = 2.0 is invalid: expected an integer of at least 0",
        ),
        ("servers = []\nverbose = 1", "verbose = 1 is invalid: expected true or false"),
        ("servers = []\nurl = 'http://x'", "url = 'http://x' is invalid: expected a nats:// URL"),
        ("", "is missing the key 'servers': expected a list of strings (NATS server URLs)"),
    ],
)
def test_check_names_file_table_key_value_and_what_is_valid(
    isolated: Path, body: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        plugin_table(isolated, body).check(SPEC)
    assert str(error.value) == f"srpc.toml: [srpc.demo] {expected}"


def test_an_unknown_key_names_the_valid_keys(isolated: Path) -> None:
    with pytest.raises(ConfigError) as error:
        plugin_table(isolated, "servers = []\nretires = 2").check(SPEC)
    assert str(error.value) == (
        "srpc.toml: unknown key 'retires' in [srpc.demo] (did you mean 'retries'?); "
        "valid keys: mode, ratio, retries, servers, url, verbose"
    )


def test_plugin_options_are_a_read_only_mapping() -> None:
    options = Config(tables={"demo": {"a": 1}}).options("demo")
    assert isinstance(options, Mapping)
    assert options == {"a": 1} and options.get("b", 2) == 2 and list(options) == ["a"]
    with pytest.raises(TypeError):
        options["a"] = 2  # type: ignore[index]
    assert Config().options("tcp") == {}


def test_options_given_in_code_name_no_file() -> None:
    options = PluginOptions.wrap({"retries": "x"}, "demo")
    assert (options.table, options.source) == ("srpc.demo", "defaults")
    assert PluginOptions.wrap(options, "other") is options
    with pytest.raises(ConfigError, match=r"^\[srpc\.demo\] retries = 'x' is invalid"):
        options.check({"retries": Option(int, default=1)})
    assert PluginOptions.wrap(None, "demo").check({"retries": Option(int, default=1)}) == {
        "retries": 1
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("workers = 0", "workers = 0 is invalid: expected an integer from 1 to 1024"),
        ("workers = '4'", "workers = '4' is invalid: expected an integer from 1 to 1024"),
        ("connect = 'broker:5001'", "connect = 'broker:5001': the ZeroMQ broker"),
    ],
)
def test_a_bad_zmq_option_names_the_file(isolated: Path, line: str, expected: str) -> None:
    write(isolated / "srpc.toml", f"[srpc]\ntransport = 'zmq'\n[srpc.zmq]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        get_plugins().for_config(load_config())
    assert str(error.value).startswith(f"srpc.toml: [srpc.zmq] {expected}")


def test_zmq_options_are_read(isolated: Path) -> None:
    write(isolated / "srpc.toml", "[srpc.zmq]\nworkers = 4\n")
    parsed = ZmqOptions.parse(load_config().options("zmq"))
    assert parsed.workers == 4
    with pytest.raises(ConfigError, match=r"unknown key 'worker' in \[srpc\.zmq\]"):
        ZmqOptions.parse({"worker": 4})
