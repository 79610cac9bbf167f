"""`srpc_core.signals.stop_on_signals`: real signals stop, then the old handlers come back."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from srpc_core.signals import STOP_SIGNALS, stop_on_signals

LONG = 10.0


class Previous:
    """A handler installed before the test: it must be back afterwards."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append(signum)


@pytest.fixture
def previous() -> Iterator[Previous]:
    handler = Previous()
    saved = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield handler
    finally:
        for signum, old in saved.items():
            signal.signal(signum, old)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_real_signal_calls_stop_and_the_old_handler_returns(
    previous: Previous, signum: signal.Signals
) -> None:
    stopped = threading.Event()
    with stop_on_signals(stopped.set) as installed:
        assert installed
        os.kill(os.getpid(), signum)
        assert stopped.wait(LONG)
    assert previous.calls == []  # the signal went to stop, not to the old handler
    assert signal.getsignal(signum) is previous
    signal.raise_signal(signum)  # and the old handler is the one that runs now
    assert previous.calls == [signum]


def test_every_arrival_calls_stop(previous: Previous) -> None:
    calls: list[None] = []
    with stop_on_signals(lambda: calls.append(None)):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert len(calls) == 3


def test_the_old_handlers_return_when_the_block_raises(previous: Previous) -> None:
    with pytest.raises(RuntimeError, match="boom"), stop_on_signals(lambda: None):
        assert signal.getsignal(signal.SIGTERM) is not previous
        raise RuntimeError("boom")
    assert all(signal.getsignal(signum) is previous for signum in STOP_SIGNALS)


def test_outside_the_main_thread_nothing_is_installed(previous: Previous) -> None:
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals(lambda: None) as installed:
            seen.append(installed)
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(LONG)
    assert seen == [False, previous]


def test_a_signal_that_cannot_be_caught_leaves_every_handler_as_it_was(
    previous: Previous,
) -> None:
    with pytest.raises(OSError), stop_on_signals(lambda: None, (signal.SIGTERM, signal.SIGKILL)):
        pass
    assert signal.getsignal(signal.SIGTERM) is previous


def test_only_the_signals_asked_for(previous: Previous) -> None:
    with stop_on_signals(lambda: None, (signal.SIGTERM,)):
        assert signal.getsignal(signal.SIGINT) is previous
        assert signal.getsignal(signal.SIGTERM) is not previous
    assert signal.getsignal(signal.SIGTERM) is previous
