"""`srpc_core.wakeup.Waker`: the self-pipe every serving loop waits on."""

from __future__ import annotations

import selectors
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from srpc_core.wakeup import Waker

LONG = 10.0  # seconds a test waits for something that should happen at once


@pytest.fixture
def waker() -> Iterator[Waker]:
    with Waker() as waker:
        yield waker


def readable(waker: Waker, timeout: float = 0.0) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(waker, selectors.EVENT_READ)  # by its fileno()
        return bool(selector.select(timeout))


def test_wake_makes_the_reader_readable_until_drained(waker: Waker) -> None:
    assert not readable(waker)
    waker.wake()
    assert readable(waker, LONG)
    assert readable(waker)  # stays awake until drained
    waker.drain()
    assert not readable(waker)


def test_drain_without_a_wake_up_returns_at_once(waker: Waker) -> None:
    waker.drain()
    assert not readable(waker)


def test_reader_and_fileno_name_the_same_socket(waker: Waker) -> None:
    assert waker.fileno() == waker.reader.fileno() >= 0
    assert not waker.closed


def test_a_wake_from_another_thread_ends_a_blocked_select(waker: Waker) -> None:
    woke = threading.Event()
    selecting = threading.Event()

    def wait() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(waker.reader, selectors.EVENT_READ)
            selecting.set()
            if selector.select(LONG):
                woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert selecting.wait(LONG)
    waker.wake()
    thread.join(LONG)
    assert woke.is_set()


def test_wake_never_blocks_even_when_nobody_drains(waker: Waker) -> None:
    # Far more wake-ups than a socket buffer holds: the extra ones are dropped, not waited on.
    for _ in range(300_000):
        waker.wake()
    assert readable(waker)
    waker.drain()
    assert not readable(waker)
    waker.wake()
    assert readable(waker, LONG)


def test_wake_from_a_signal_handler(waker: Waker) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        waker.wake()

    previous = signal.signal(signal.SIGUSR1, handle)
    try:
        signal.raise_signal(signal.SIGUSR1)
        assert readable(waker, LONG)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_after_close_nothing_raises() -> None:
    waker = Waker()
    waker.close()
    assert waker.closed
    assert waker.fileno() == -1
    waker.wake()
    waker.drain()
    waker.close()  # idempotent


def test_close_while_another_thread_keeps_waking() -> None:
    waker = Waker()
    done = threading.Event()
    errors: list[BaseException] = []

    def keep_waking() -> None:
        try:
            while not done.is_set():
                waker.wake()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=keep_waking)
    thread.start()
    waker.close()
    done.set()
    thread.join(LONG)
    assert not thread.is_alive() and errors == []


def test_a_zmq_poller_waits_on_it(waker: Waker) -> None:
    zmq = pytest.importorskip("zmq")
    poller = zmq.Poller()
    poller.register(waker, zmq.POLLIN)
    assert poller.poll(0) == []
    waker.wake()
    # A poller reports anything that is not a zmq socket by its file descriptor.
    assert dict(poller.poll(int(LONG * 1000))) == {waker.fileno(): zmq.POLLIN}
    waker.drain()
    assert poller.poll(0) == []
