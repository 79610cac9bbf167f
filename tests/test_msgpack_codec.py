"""The built-in ``msgpack`` codec: what it carries, what it refuses, its budgets, and a real
server and client talking through it (the conformance kit runs in test_conformance_builtin.py).
"""

from __future__ import annotations

import collections
import enum
import math
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import ServerProcess, import_interface, make_project

from srpc_core import Client
from srpc_core.convert import WireProfile
from srpc_core.errors import ConfigError, DecodeError, EncodeError, MismatchError
from srpc_core.options import PluginOptions
from srpc_core.plugins import get_plugins
from srpc_plugins.msgpack_codec import MsgpackCodec


@pytest.fixture
def codec() -> MsgpackCodec:
    return MsgpackCodec({})


def packed(value: Any) -> bytes:
    """`value` as MessagePack, written by msgspec without the codec's checks."""
    return msgspec.msgpack.encode(value)


def array(*items: bytes) -> bytes:
    """A MessagePack array of already encoded items."""
    assert len(items) < 16
    return bytes([0x90 + len(items)]) + b"".join(items)


# -- what it carries ---------------------------------------------------------------------------


def test_bytes_travel_natively_and_typed_conversion_stops_there(codec: MsgpackCodec) -> None:
    assert codec.encode([b"\x00\xff"]) == b"\x91\xc4\x02\x00\xff"  # bin 8, not a string
    assert WireProfile.for_codec(codec).native == (bytes,)


def test_bytes_like_values_and_subclasses_travel_as_their_base(codec: MsgpackCodec) -> None:
    class Colour(enum.IntEnum):
        RED = 1

    sent = [bytearray(b"ab"), memoryview(b"cd"), (1, (2,)), Colour.RED]
    sent.append(collections.OrderedDict(a=1))
    assert codec.decode(codec.encode(sent)) == [b"ab", b"cd", [1, [2]], 1, {"a": 1}]


def test_non_finite_floats_and_negative_zero_round_trip(codec: MsgpackCodec) -> None:
    nan, inf, minus_inf, zero = codec.decode(codec.encode([math.nan, math.inf, -math.inf, -0.0]))
    assert math.isnan(nan) and inf == math.inf and minus_inf == -math.inf
    assert math.copysign(1, zero) == -1


def test_64_bit_integers_and_no_more(codec: MsgpackCodec) -> None:
    assert codec.decode(codec.encode([2**64 - 1, -(2**63)])) == [2**64 - 1, -(2**63)]
    for big in (2**64, -(2**63) - 1):
        with pytest.raises(EncodeError, match=r"codec 'msgpack' .* type 'int'"):
            codec.encode([1, "echo", [big], {}])


# -- what it refuses ---------------------------------------------------------------------------


class Plain(enum.Enum):
    A = "a"


@pytest.mark.parametrize(
    "value",
    [{1, 2}, frozenset(), struct, Plain.A],
    ids=["set", "frozenset", "module", "plain-enum"],
)
def test_values_msgspec_would_change_silently_are_refused(codec: MsgpackCodec, value: Any) -> None:
    with pytest.raises(EncodeError, match=type(value).__qualname__):
        codec.encode([1, "echo", [value], {}])


@pytest.mark.parametrize("key", [1, b"k", 1.5, None, (1, 2)], ids=repr)
def test_dict_keys_must_be_str_when_encoding(codec: MsgpackCodec, key: Any) -> None:
    with pytest.raises(EncodeError, match=f"dict key of type '{type(key).__qualname__}'"):
        codec.encode([1, "echo", [], {"fine": {key: 1}}])
    # Long dicts are checked another way (by the set of their key types): the same rule.
    long = {str(i): i for i in range(100)} | {key: 1}
    with pytest.raises(EncodeError, match="dict key"):
        codec.encode([1, "echo", [long], {}])


@pytest.mark.parametrize(
    "data",
    [
        packed([1, {1: "int key"}]),
        packed([1, {b"k": "bytes key"}]),
        packed([1, {1.5: "float key"}]),
        packed([1, {str(i): i for i in range(40)} | {7: "among many"}]),
        packed({5: "top level"}),
    ],
    ids=["int", "bytes", "float", "long-map", "top-level"],
)
def test_map_keys_other_than_text_are_refused(codec: MsgpackCodec, data: bytes) -> None:
    with pytest.raises(DecodeError, match="map key"):
        codec.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        array(b"\x01", b"\xd4\x05\x00"),  # fixext 1, type 5
        array(b"\xc7\x03\x7f" + b"abc"),  # ext 8, type 127
        array(b"\xd6\xff" + struct.pack(">I", 0)),  # the timestamp (-1), 32-bit form
        b"\xd7\xff" + bytes(8),  # a timestamp as the whole message
    ],
    ids=["fixext", "ext8", "timestamp", "top-level-timestamp"],
)
def test_extension_types_are_refused(codec: MsgpackCodec, data: bytes) -> None:
    with pytest.raises(DecodeError, match=r"extension type|'datetime'"):
        codec.decode(data)


def test_extension_heads_inside_bytes_are_only_bytes(codec: MsgpackCodec) -> None:
    message = [{"k": [b"\xd6\xff\x00\x00\x00\x00", "\x7f"]}]
    assert codec.decode(packed(message)) == message


def test_bytes_after_the_message_are_refused(codec: MsgpackCodec) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(codec.encode([1, 0, 6]) + b"\xc0")


def test_lengths_the_data_does_not_hold_are_refused_without_allocating(
    codec: MsgpackCodec,
) -> None:
    for head in (b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"):
        with pytest.raises(DecodeError, match="truncated"):
            codec.decode(head + b"\x00")


# -- budgets -----------------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("max_depth", [1, 8, 256])
def test_max_depth_is_the_deepest_nesting_accepted_both_ways(max_depth: int) -> None:
    codec = MsgpackCodec({"max_depth": max_depth})
    assert codec.decode(codec.encode(nested(max_depth))) == nested(max_depth)
    with pytest.raises(EncodeError, match="max_depth"):
        codec.encode(nested(max_depth + 1))
    with pytest.raises(DecodeError, match="max_depth"):
        codec.decode(packed(nested(max_depth + 1)))
    maps: Any = 0
    for _ in range(max_depth + 1):
        maps = {"k": maps}
    with pytest.raises(EncodeError, match="max_depth"):
        codec.encode(maps)
    with pytest.raises(DecodeError, match="max_depth"):
        codec.decode(packed(maps))


def test_very_deep_input_is_a_decode_error_not_a_crash(codec: MsgpackCodec) -> None:
    with pytest.raises(DecodeError):
        codec.decode(b"\x91" * 200_000 + b"\xc0")


def test_structures_that_contain_themselves_are_refused(codec: MsgpackCodec) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(EncodeError, match="contains itself"):
        codec.encode([1, "echo", [loop], {}])


def test_max_containers_refuses_a_message_of_many_empty_arrays() -> None:
    codec = MsgpackCodec({"max_containers": 5000})
    within = packed([[] for _ in range(4999)])  # 4999 + the outer array
    assert len(codec.decode(within)) == 4999
    with pytest.raises(DecodeError, match="max_containers"):
        codec.decode(packed([[] for _ in range(5000)]))
    with pytest.raises(DecodeError, match="max_containers"):
        codec.decode(packed([{"k": []} for _ in range(3000)]))


def test_max_containers_counts_no_array_heads_inside_strings_and_bytes() -> None:
    codec = MsgpackCodec({"max_containers": 100})
    # Every payload byte looks like an array head; none is one.
    message = [1, "echo", [b"\x90" * 500_000, "\x10" * 1000, "é" * 300], {"x": b"\xdc" * 9}]
    assert codec.decode(codec.encode(message)) == message


def test_max_containers_with_many_small_items_under_the_budget() -> None:
    codec = MsgpackCodec({"max_containers": 20_000})
    message = [1, "echo", [list(range(300)) for _ in range(100)], {}]  # 102 containers
    assert codec.decode(codec.encode(message)) == message
    bigger = [1, "echo", [[i, 256] for i in range(19_999)], {}]  # 20,001 containers
    with pytest.raises(DecodeError, match="max_containers"):
        codec.decode(codec.encode(bigger))


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_dept": 3}, "unknown key 'max_dept' in \\[srpc.msgpack\\] \\(did you mean"),
        ({"max_depth": 0}, "max_depth = 0 is invalid"),
        ({"max_depth": 513}, "max_depth = 513 is invalid: expected an integer from 1 to 512"),
        ({"max_containers": "many"}, "max_containers = 'many' is invalid"),
    ],
)
def test_bad_options_name_the_table_and_key(options: dict[str, Any], message: str) -> None:
    wrapped = PluginOptions(options, table="srpc.msgpack", source="srpc.toml")
    with pytest.raises(ConfigError, match=f"srpc.toml: .*{message}"):
        MsgpackCodec(wrapped)


def test_registered_by_srpc_itself() -> None:
    offer = get_plugins().codecs["msgpack"]
    assert offer.factory is MsgpackCodec
    assert offer.plugin.distribution == "srpclib"


# -- a real server and client ------------------------------------------------------------------

INTERFACE = """
from abc import ABC, abstractmethod
from typing import Any


class BlobsInterface(ABC):
    @abstractmethod
    def echo(self, data: bytes) -> bytes: ...

    @abstractmethod
    def size(self, data: bytes) -> int: ...

    @abstractmethod
    def index(self, names: dict[int, str]) -> dict[int, str]: ...

    @abstractmethod
    def anything(self, value: Any) -> Any: ...
"""

IMPLEMENTATION = """
from blobs.blobs_interface import BlobsInterface


class Blobs(BlobsInterface):
    def echo(self, data):
        assert type(data) is bytes, type(data)
        return data

    def size(self, data):
        return len(data)

    def index(self, names):
        assert all(type(k) is int for k in names), names
        return {k + 1: v.upper() for k, v in names.items()}

    def anything(self, value):
        return value
"""


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    project = make_project(
        tmp_path_factory.mktemp("msgpack"),
        "blobs",
        {
            "blobs/blobs_interface.py": textwrap.dedent(INTERFACE),
            "blobs/blobs.py": textwrap.dedent(IMPLEMENTATION),
        },
    )
    config = project / "srpc.toml"
    config.write_text(
        '[srpc]\ncodec = "msgpack"\n\n[srpc.msgpack]\nmax_depth = 16\n\n[srpc.metrics]\npath = ""\n'
    )
    with ServerProcess(project, "blobs", config=config) as server:
        assert "codec msgpack" in server.text()
        yield server, project


@pytest.mark.e2e
def test_a_server_and_client_chosen_in_srpc_toml(blobs: tuple[ServerProcess, Path]) -> None:
    server, project = blobs
    interface = import_interface(project, "blobs")
    with Client(interface, port=server.port, config=project / "srpc.toml") as client:
        payload = bytes(range(256)) * 4096  # 1 MiB
        assert client.call("echo", (payload,)) == payload
        assert client.call("size", (b"abc",)) == 3
        assert client.call("index", ({1: "a", 2: "b"},)) == {2: "A", 3: "B"}
        value = {"nested": [1, 2.5, None, True, b"\x00", {"deeper": "ok"}]}
        assert client.call("anything", (value,)) == value
        # Refused by the client's own codec before sending; the connection stays usable.
        with pytest.raises(EncodeError, match="codec 'msgpack' cannot carry a value of type 'set'"):
            client.call("anything", ({1, 2},))
        with pytest.raises(EncodeError, match="max_depth"):
            client.call("anything", (nested(20),))
        assert client.call("size", (b"still here",)) == 10


@pytest.mark.e2e
def test_a_client_with_another_codec_is_told_both_settings(
    blobs: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, project = blobs
    interface = import_interface(project, "blobs")
    json_config = tmp_path / "srpc.toml"
    json_config.write_text('[srpc]\ncodec = "json"\n')
    with (
        Client(interface, port=server.port, config=json_config) as client,
        pytest.raises(MismatchError, match="codec: client uses 'json', server uses 'msgpack'"),
    ):
        client.call("size", (b"x",))
