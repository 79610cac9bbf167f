"""The default codec's own promises (the conformance kit covers the shared ones)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from srpc_core.config import load_config
from srpc_core.errors import ConfigError, DecodeError, EncodeError
from srpc_core.plugins import get_plugins
from srpc_plugins.json_codec import JsonCodec

codec = JsonCodec()


def test_messages_are_compact_utf8() -> None:
    assert codec.encode([1, "add", ["héllo ✓"], {}]) == '[1,"add",["héllo ✓"],{}]'.encode()


def test_what_json_changes_is_documented_behaviour() -> None:
    assert codec.decode(codec.encode((1, 2))) == [1, 2]  # tuples arrive as lists
    assert codec.decode(codec.encode({1: "a"})) == {"1": "a"}  # keys arrive as strings
    assert math.isnan(codec.decode(codec.encode(float("nan"))))


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object()])
def test_values_json_cannot_carry_name_their_type(value: object) -> None:
    with pytest.raises(
        EncodeError,
        match=rf"codec 'json' cannot carry a value of type "
        rf"'{type(value).__qualname__}'",
    ):
        codec.encode([value])


def test_circular_values_are_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="circular or nested too deeply"):
        codec.encode(loop)


@pytest.mark.parametrize(
    "data", [b"", b" ", b"[1", b"[1] [2]", b"\xff\xfe", b"[" * 100_000, b"nul", b"{'a': 1}"]
)
def test_invalid_json_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        codec.decode(data)


def test_json_has_no_options() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'indent' in \[srpc.json\]; valid keys: none"
    ):
        JsonCodec({"indent": 2})
    assert JsonCodec({}).encode([1]) == b"[1]"


def test_a_json_table_in_srpc_toml_is_checked_and_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "srpc.toml"
    config.write_text("[srpc]\n[srpc.json]\nensure_ascii = true\n")
    with pytest.raises(ConfigError) as error:
        get_plugins().for_config(load_config(config))
    assert str(error.value).startswith(f"{config}: unknown key 'ensure_ascii' in [srpc.json]")
    config.write_text("[srpc]\n[srpc.json]\n")  # an empty table is fine
    codec, _ = get_plugins().for_config(load_config(config))
    assert codec.decode(codec.encode([1, "a"])) == [1, "a"]
