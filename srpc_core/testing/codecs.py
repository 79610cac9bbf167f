"""`CodecConformance`: the tests every srpc codec must pass."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError
from srpc_core.protocol import CONTROL_PREFIX, STATUS_ERROR, STATUS_OK
from srpc_core.testing.registry import CodecSpec, make_codec
from srpc_core.testing.values import CANDIDATES_TO_REFUSE, SAMPLES, same, short_repr

#: The types srpc's own messages are built from: every codec must carry them.
PROTOCOL_TYPES: tuple[type, ...] = (type(None), bool, int, float, str, list, dict)
RANDOM_SEED = 20240229
NON_FINITE_FLOATS = (math.nan, math.inf, -math.inf)


class CodecConformance:
    """Subclass it in a test module and name your codec; pytest runs every check on it::

        from srpc_core.testing import CodecConformance
        from my_plugin import MyCodec

        class TestMyCodec(CodecConformance):
            codec = MyCodec            # the factory you register, or a registered name: "my"

    Checked: round trips of samples of every type in ``value_types`` (plus `extra_values`),
    NaN and ±inf round-tripped, or refused when the codec sets ``nonfinite_floats = False``,
    `EncodeError` naming the type and the codec for values it cannot carry, `DecodeError` for
    empty, truncated and over-long input, nothing but a value or a `DecodeError` for random
    bytes, no message starting with the control prefix, thread safety.
    """

    #: The codec under test: its factory (usually the class) or its registered name.
    codec: ClassVar[CodecSpec]
    #: The options it is built with (its ``[srpc.<name>]`` table).
    options: ClassVar[Mapping[str, Any]] = {}
    #: More values it round-trips exactly, beyond the kit's samples for its `value_types`.
    extra_values: ClassVar[tuple[Any, ...]] = ()
    #: More values it must refuse with an `EncodeError`.
    extra_refused: ClassVar[tuple[Any, ...]] = ()
    #: How many random inputs the decoder is fed.
    random_inputs: ClassVar[int] = 2000

    @pytest.fixture
    def codec_under_test(self) -> Codec:
        """The codec, built the way srpc builds it from srpc.toml."""
        spec = getattr(self, "codec", None)
        if spec is None:
            pytest.fail(f"{type(self).__name__} must set `codec = YourCodecClass` (or its name)")
        return make_codec(spec, self.options)

    # -- what it carries ---------------------------------------------------------------------

    def test_carries_the_protocol_data_model(self, codec_under_test: Codec) -> None:
        missing = [t.__name__ for t in PROTOCOL_TYPES if t not in codec_under_test.value_types]
        assert not missing, f"value_types must include {missing}: srpc's messages use them"

    def test_every_declared_type_has_samples(self, codec_under_test: Codec) -> None:
        extra_types = {type(v) for v in self.extra_values}
        unknown = [
            t.__qualname__
            for t in codec_under_test.value_types
            if t not in SAMPLES and t not in extra_types
        ]
        assert not unknown, f"the kit has no samples of {unknown}: list some in `extra_values`"

    def test_round_trips_every_declared_type(self, codec_under_test: Codec) -> None:
        failures = []
        for value in self._values(codec_under_test):
            for message in ([7, "echo", [value], {"value": value}], [7, STATUS_OK, value]):
                problem = _round_trip_problem(codec_under_test, message)
                if problem:
                    failures.append(f"{short_repr(value)}: {problem}")
        assert not failures, "values that did not come back as themselves:\n" + "\n".join(failures)

    def test_non_finite_floats_round_trip_or_are_refused(self, codec_under_test: Codec) -> None:
        failures = []
        for value in NON_FINITE_FLOATS:
            if codec_under_test.nonfinite_floats:
                problem = _round_trip_problem(codec_under_test, [7, STATUS_OK, value])
                hint = "round-trip it, or set nonfinite_floats = False and refuse it"
            else:
                problem = _refusal_problem(codec_under_test, value)
                hint = "nonfinite_floats is False: refuse it with an EncodeError"
            if problem:
                failures.append(f"{value!r}: {problem} ({hint})")
        assert not failures, "NaN and infinities:\n" + "\n".join(failures)

    def test_tuples_arrive_as_lists(self, codec_under_test: Codec) -> None:
        decoded = codec_under_test.decode(codec_under_test.encode([1, "f", (1, ("a", None)), {}]))
        assert decoded == [1, "f", [1, ["a", None]], {}]

    def test_round_trips_protocol_messages(self, codec_under_test: Codec) -> None:
        for message in _protocol_messages():
            assert same(message, codec_under_test.decode(codec_under_test.encode(message)))

    def test_messages_never_start_with_the_control_prefix(self, codec_under_test: Codec) -> None:
        messages = [*_protocol_messages()]
        messages += [[0, "echo", [v], {}] for v in self._values(codec_under_test)]
        for message in messages:
            encoded = codec_under_test.encode(message)
            assert not encoded.startswith(CONTROL_PREFIX), f"{short_repr(message)} -> {encoded!r}"

    # -- what it refuses ---------------------------------------------------------------------

    def test_refuses_values_it_cannot_carry(self, codec_under_test: Codec) -> None:
        declared = tuple(codec_under_test.value_types)
        refusable = [v for v in CANDIDATES_TO_REFUSE if type(v) not in declared]
        failures = []
        for value in [*refusable, *self.extra_refused]:
            problem = _refusal_problem(codec_under_test, value)
            if problem:
                failures.append(f"{short_repr(value)}: {problem}")
        assert not failures, "values not refused with a clear EncodeError:\n" + "\n".join(failures)

    def test_refuses_a_structure_that_contains_itself(self, codec_under_test: Codec) -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        with pytest.raises(EncodeError):
            codec_under_test.encode([1, "echo", [loop], {}])

    def test_empty_input_is_a_decode_error(self, codec_under_test: Codec) -> None:
        with pytest.raises(DecodeError):
            codec_under_test.decode(b"")

    def test_truncated_encodings_are_decode_errors(self, codec_under_test: Codec) -> None:
        accepted = []
        for message in _protocol_messages():
            encoded = codec_under_test.encode(message)
            for cut in _cut_points(len(encoded)):
                try:
                    codec_under_test.decode(encoded[:cut])
                except DecodeError:
                    continue
                accepted.append(f"the first {cut} of {len(encoded)} bytes of {message!r}")
        assert not accepted, "truncated messages decoded without a DecodeError:\n" + "\n".join(
            accepted[:10]
        )

    def test_bytes_after_a_message_are_a_decode_error(self, codec_under_test: Codec) -> None:
        encoded = codec_under_test.encode([1, "add", [4, 2], {}])
        for tail in (b"\x00", b"\x01", b"garbage", encoded):
            with pytest.raises(DecodeError):
                codec_under_test.decode(encoded + tail)

    def test_random_bytes_decode_to_a_value_or_a_decode_error(
        self, codec_under_test: Codec
    ) -> None:
        rng = random.Random(RANDOM_SEED)
        for _ in range(self.random_inputs):
            data = rng.randbytes(rng.randrange(1, 64))
            try:
                codec_under_test.decode(data)
            except DecodeError:
                pass
            except Exception as exc:
                pytest.fail(f"decode({data!r}) raised {type(exc).__name__}: {exc}")

    # -- how it is used ----------------------------------------------------------------------

    def test_is_thread_safe(self, codec_under_test: Codec) -> None:
        def round_trips(worker: int) -> bool:
            for i in range(200):
                message = [i, "echo", [worker, f"w{worker}-{i}", [i] * (i % 7)], {}]
                if codec_under_test.decode(codec_under_test.encode(message)) != message:
                    return False
            return True

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(round_trips, range(8)))

    def _values(self, codec: Codec) -> Iterator[Any]:
        for value_type in codec.value_types:
            for value in SAMPLES.get(value_type, ()):
                if codec.nonfinite_floats or not _non_finite(value):
                    yield value
        yield from self.extra_values


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _round_trip_problem(codec: Codec, message: list[Any]) -> str | None:
    try:
        received = codec.decode(codec.encode(message))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if same(message, received) else f"came back as {short_repr(received)}"


def _refusal_problem(codec: Codec, value: Any) -> str | None:
    type_name = type(value).__qualname__
    try:
        codec.encode([1, "echo", [value], {}])
    except EncodeError as exc:
        missing = [word for word in (type_name, codec.name) if word not in str(exc)]
        return f"the EncodeError does not name {missing}: {exc}" if missing else None
    except Exception as exc:
        return f"raised {type(exc).__name__} instead of EncodeError: {exc}"
    return "was encoded: declare its type in value_types, or refuse it"


def _protocol_messages() -> list[list[Any]]:
    error = {
        "type": "ZeroDivisionError",
        "module": "builtins",
        "message": "division by zero",
        "args": ["division by zero"],
        "base": "ZeroDivisionError",
        "traceback": None,
    }
    return [
        [1, "add", [4, 2], {}],
        [2**31, "call", [1.5, "two", None, True, [3]], {"key": "value", "n": 0}],
        [3, STATUS_OK, 6],
        [4, STATUS_ERROR, error],
        [5, STATUS_ERROR, {**error, "traceback": "Traceback (most recent call last):\n..."}],
    ]


def _cut_points(length: int) -> range | list[int]:
    """Every proper prefix of a short message; about a hundred of a long one."""
    if length <= 200:
        return range(length)
    return sorted({*range(0, length, max(1, length // 100)), length - 1})


__all__ = [
    "NON_FINITE_FLOATS",
    "PROTOCOL_TYPES",
    "RANDOM_SEED",
    "CodecConformance",
]
