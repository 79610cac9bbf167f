"""The default codec's own promises (the conformance kit covers the shared ones)."""

from __future__ import annotations

import json
import math
import sys
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


def test_json_options_are_only_its_decoding_budgets() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'indent' in \[srpc.json\]; valid keys: max_containers, max_int_digits",
    ):
        JsonCodec({"indent": 2})
    assert JsonCodec({}).encode([1]) == b"[1]"
    with pytest.raises(ConfigError, match=r"max_containers = 0 is invalid"):
        JsonCodec({"max_containers": 0})


def test_an_integer_beyond_the_digit_budget_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="4300 digits"):
        codec.decode(b"[" + b"7" * 5000 + b"]")  # Python's own limit, in the C fast path
    small = JsonCodec({"max_int_digits": 10})
    assert small.decode(b"[-1234567890,5]") == [-1234567890, 5]
    with pytest.raises(DecodeError, match=r"11 digits is longer than max_int_digits \(10\)"):
        small.decode(b"[12345678901]")


def test_the_digit_budget_holds_where_python_lifted_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # PYTHONINTMAXSTRDIGITS=0: no limit in int() itself
    try:
        unlimited = JsonCodec()
        with pytest.raises(DecodeError, match="max_int_digits"):
            unlimited.decode(b"7" * 100_000)
    finally:
        sys.set_int_max_str_digits(before)


def test_a_huge_integer_is_an_encode_error_not_a_crash() -> None:
    with pytest.raises(EncodeError, match="cannot carry this value"):
        codec.encode(10**5000)


def test_too_many_containers_are_refused_before_decoding() -> None:
    small = JsonCodec({"max_containers": 100})
    assert small.decode(b"[" + b"[]," * 99 + b"1]") == [[]] * 99 + [1]
    with pytest.raises(DecodeError, match=r"more than 100 arrays and objects"):
        small.decode(b"[" + b"{}," * 100 + b"1]")
    # Brackets inside strings are not containers.
    text = json.dumps(["[{" * 500, "]}" * 500]).encode()
    assert small.decode(text) == ["[{" * 500, "]}" * 500]


def test_a_json_table_in_srpc_toml_is_checked_and_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "srpc.toml"
    config.write_text("[srpc]\n[srpc.json]\nensure_ascii = true\n")
    with pytest.raises(ConfigError) as error:
        get_plugins().for_config(load_config(config))
    assert str(error.value).startswith(f"{config}: unknown key 'ensure_ascii' in [srpc.json]")
    config.write_text("[srpc]\n[srpc.json]\n")  # an empty table is fine
    codec, _ = get_plugins().for_config(load_config(config))
    assert codec.decode(codec.encode([1, "a"])) == [1, "a"]
