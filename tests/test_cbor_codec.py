"""The cbor codec: what travels as itself, what is refused, and hostile input.

The conformance kit (tests/test_conformance_builtin.py) covers the generic checks; these are
the CBOR-specific ones, ending with bytes, datetimes and big integers between real processes.
"""

from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest
from support import ServerProcess, child_env, make_project, run_client

from srpc_core import Client, ConfigError, DecodeError, EncodeError, load_config
from srpc_core.plugins import get_plugins
from srpc_core.protocol import CONTROL_PREFIX
from srpc_plugins.cbor_codec import CBOR2_BUILTIN_TAGS, CborCodec

codec = CborCodec()


def test_bytes_big_integers_and_aware_datetimes_travel_as_themselves() -> None:
    india = datetime(2024, 2, 29, 12, 30, 45, 123_456, tzinfo=timezone(timedelta(hours=5.5)))
    values = [b"\x00\xff", 2**200, -(2**200), india, datetime(1970, 1, 1, tzinfo=UTC)]
    decoded = codec.decode(codec.encode([1, "echo", values, {}]))[2]
    assert decoded == values
    assert [type(v) for v in decoded] == [bytes, int, int, datetime, datetime]
    assert decoded[3].utcoffset() == timedelta(
        hours=5.5
    )  # the offset is kept, not only the instant


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(EncodeError, match=r"naive value of type 'datetime'.*attach a time zone"):
        codec.encode([1, "echo", [datetime(2024, 1, 1)], {}])


def test_non_string_dict_keys_are_refused_when_encoding() -> None:
    with pytest.raises(EncodeError, match="dict key of type 'int'"):
        codec.encode([1, "echo", [{1: "one"}], {}])


def test_a_request_is_an_array_so_never_a_control_message() -> None:
    encoded = codec.encode([0, "\x00srpc", [b"\x00srpc"], {"\x00srpc": 0}])
    assert encoded[0] == 0x84  # a 4-element array
    assert not encoded.startswith(CONTROL_PREFIX)


@pytest.mark.parametrize("tag", [*CBOR2_BUILTIN_TAGS, 6, 24, 32, 1000, 2**32])
def test_semantic_tags_that_build_objects_are_refused(tag: int) -> None:
    for value in ("x", b"x", [1, 2], 0):
        with pytest.raises(DecodeError, match="not valid srpc CBOR"):
            codec.decode(cbor2.dumps([1, "echo", [cbor2.CBORTag(tag, value)], {}]))


def test_refused_tags_say_which_tag() -> None:
    with pytest.raises(DecodeError, match="tag 35 is not allowed"):
        codec.decode(cbor2.dumps(cbor2.CBORTag(35, "(a+)+$")))  # a regular expression


def test_shared_references_cannot_build_cycles() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(DecodeError):
        codec.decode(cbor2.dumps(cyclic, value_sharing=True))


def test_allowed_tags_decode() -> None:
    assert codec.decode(cbor2.dumps(cbor2.CBORTag(55799, [1]))) == [1]  # self-describe marker
    assert codec.decode(cbor2.dumps(cbor2.CBORTag(1, 0))) == datetime(1970, 1, 1, tzinfo=UTC)


def test_deep_nesting_is_bounded() -> None:
    with pytest.raises(DecodeError, match="depth"):
        codec.decode(b"\x81" * 100_000 + b"\x00")
    assert CborCodec({"max_depth": 5}).decode(b"\x81" * 4 + b"\x00") == [[[[0]]]]
    with pytest.raises(DecodeError):
        CborCodec({"max_depth": 5}).decode(b"\x81" * 6 + b"\x00")


def test_hash_flooding_keys_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(DecodeError, match="map key"):
        codec.decode(cbor2.dumps({1: "a", 2**61 + 1: "b"}))  # ints collide by construction
    with pytest.raises(DecodeError, match=r"[Dd]uplicate"):
        codec.decode(b"\xa2\x61a\x01\x61a\x02")


def test_an_absurd_declared_length_is_a_decode_error_not_an_allocation() -> None:
    # A byte string header claiming 2**63 bytes, followed by nothing.
    with pytest.raises(DecodeError):
        codec.decode(b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff")


def test_big_integers_beyond_the_budget_are_refused() -> None:
    limit = 1024
    assert codec.decode(cbor2.dumps(2 ** (8 * limit) - 1)) == 2 ** (8 * limit) - 1
    assert codec.decode(cbor2.dumps(-(2 ** (8 * limit)))) == -(2 ** (8 * limit))
    for value in (2 ** (8 * limit), -(2 ** (8 * limit)) - 1, 2 ** (8 * 2**20)):
        with pytest.raises(DecodeError, match=r"big integer is longer than max_bignum_bytes"):
            codec.decode(cbor2.dumps(value))
    with pytest.raises(DecodeError, match="must hold a byte string"):
        codec.decode(b"\xc2\x01")  # tag 2 around an integer
    assert CborCodec({"max_bignum_bytes": 16}).decode(cbor2.dumps(2**120)) == 2**120
    with pytest.raises(DecodeError, match=r"max_bignum_bytes \(16\)"):
        CborCodec({"max_bignum_bytes": 16}).decode(cbor2.dumps(2**130))


def test_too_many_containers_are_refused_before_decoding() -> None:
    small = CborCodec({"max_containers": 100})
    assert small.decode(cbor2.dumps([[]] * 99)) == [[]] * 99
    with pytest.raises(DecodeError, match=r"more than 100 arrays and maps"):
        small.decode(cbor2.dumps([{}] * 100))
    # Container bytes inside strings and numbers are not containers: a blob of them is fine.
    blob = [bytes(range(0x80, 0xC0)) * 50, "\u0080" * 300, 2**64 - 1, 1.5]
    assert small.decode(cbor2.dumps(blob)) == blob
    # 4 MiB of empty arrays (75 times their size in memory) with the default budget.
    bomb = b"\x9a\x00\x40\x00\x00" + b"\x80" * (4 * 1024 * 1024)
    with pytest.raises(DecodeError, match=r"more than 1000000 arrays and maps"):
        codec.decode(bomb)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'colour' in \[srpc.cbor\].*max_depth"):
        CborCodec({"colour": "blue"})
    with pytest.raises(ConfigError, match="max_depth = 0 is invalid: expected an integer from 1"):
        CborCodec({"max_depth": 0})
    with pytest.raises(ConfigError, match="max_depth = true is invalid"):
        CborCodec({"max_depth": True})


def test_a_bad_cbor_table_in_srpc_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "srpc.toml"
    config.write_text('[srpc]\ncodec = "cbor"\n[srpc.cbor]\nmax_depth = "deep"\n')
    with pytest.raises(ConfigError) as error:
        Client(EchoInterface, "127.0.0.1", 1, config=config)
    assert str(error.value).startswith(f"{config}: [srpc.cbor] max_depth = 'deep' is invalid")


def test_max_depth_from_srpc_toml_is_used(tmp_path: Path) -> None:
    config = tmp_path / "srpc.toml"
    config.write_text('[srpc]\ncodec = "cbor"\n[srpc.cbor]\nmax_depth = 3\n')
    codec, _ = get_plugins().for_config(load_config(config))
    assert codec.decode(b"\x81" * 2 + b"\x00") == [[0]]
    with pytest.raises(DecodeError):
        codec.decode(b"\x81" * 4 + b"\x00")


class EchoInterface(ABC):
    @abstractmethod
    def echo(self, value: str) -> str: ...


def test_without_cbor2_the_module_imports_and_the_codec_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['cbor2'] = None  # what an environment without cbor2 looks like\n"
        "import srpc_plugins.cbor_codec as module\n"
        "try:\n"
        "    module.CborCodec()\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingDependencyError")
    assert "pip install 'srpclib[cbor]'" in result.stdout


INTERFACE = '''
from abc import ABC, abstractmethod
from datetime import datetime


class ArchiveInterface(ABC):
    @abstractmethod
    def store(self, name: str, data: bytes, when: datetime, size: int) -> dict:
        """Keep a blob; return what was stored."""
'''
IMPLEMENTATION = """
from archive.archive_interface import ArchiveInterface


class Archive(ArchiveInterface):
    def store(self, name, data, when, size):
        return {"name": name, "data": data, "when": when, "size": size**2, "types": [
            type(data).__name__, type(when).__name__, type(size).__name__]}
"""
CLIENT = """
from datetime import datetime, timedelta, timezone
from srpc_archive_client_stub import SrpcArchiveClientStub

archive = SrpcArchiveClientStub("127.0.0.1", {port})
when = datetime(2024, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
stored = archive.store("blob", bytes(range(256)), when, 2**50)  # int arguments: 64 bits
# results are not bounded: the square, a big integer, comes back whole
assert stored["data"] == bytes(range(256)) and stored["size"] == 2**100, stored
assert stored["when"] == when and stored["when"].utcoffset() == timedelta(hours=-5), stored
print(stored["types"], type(stored["data"]).__name__, type(stored["when"]).__name__)
"""


def test_bytes_datetimes_and_big_integers_between_real_processes(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        "archive",
        {
            "archive/archive_interface.py": INTERFACE,
            "archive/archive.py": IMPLEMENTATION,
            "srpc.toml": '[srpc]\ncodec = "cbor"\n\n[srpc.metrics]\npath = ""\n',
        },
    )
    with ServerProcess(project, "archive") as server:
        result = run_client(project, CLIENT.format(port=server.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "['bytes', 'datetime', 'int'] bytes datetime"
