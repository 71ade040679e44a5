"""SIGTERM and SIGINT handling (:mod:`bbvi_kit.interrupts`), mostly as pure logic: the handler is
called directly, the way the interpreter would call it. One test sends a real signal to this
process, only while :func:`handling_signals` has its handler installed; every test puts the
process's handlers and the module's state back as they were."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Iterator

import pytest

from bbvi_kit import interrupts
from bbvi_kit.interrupts import Interrupted, deferring, handling_signals, install_for_worker, received, requested, signal_name


class Exited(Exception):
    """Stands in for os._exit, which would end the test process."""


@pytest.fixture(autouse=True)
def restore_signal_state() -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    state, last = dict(interrupts._state), dict(interrupts._last)
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)
    interrupts._state.clear()
    interrupts._state.update(state)
    interrupts._last.clear()
    interrupts._last.update(last)


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"), (9, "SIGKILL"),
                                          (12345, "signal 12345")])
def test_signal_name(signum: int, name: str) -> None:
    assert signal_name(signum) == name


def test_interrupted_is_a_keyboard_interrupt_with_128_plus_the_signal_as_exit_code() -> None:
    term, sigint = Interrupted(signal.SIGTERM), Interrupted(signal.SIGINT)
    assert isinstance(term, KeyboardInterrupt)
    assert (term.exit_code, sigint.exit_code) == (143, 130)
    assert (str(term), str(sigint)) == ("interrupted by SIGTERM", "interrupted by SIGINT")
    assert term.signum == signal.SIGTERM
    assert str(Interrupted(signal.SIGTERM, "stopped the sweep")) == "stopped the sweep"


def test_handling_signals_installs_its_handler_and_puts_the_previous_ones_back() -> None:
    def previous(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGTERM, previous)
    with handling_signals():
        assert signal.getsignal(signal.SIGTERM) is interrupts._handler
        assert signal.getsignal(signal.SIGINT) is interrupts._handler
    assert signal.getsignal(signal.SIGTERM) is previous
    assert interrupts._state["installed"] is False


def test_outside_the_training_loop_a_signal_raises_at_once() -> None:
    with handling_signals():
        with pytest.raises(Interrupted) as info:
            interrupts._handler(signal.SIGTERM, None)
    assert info.value.exit_code == 143


def test_while_deferring_the_first_signal_is_only_recorded_and_the_second_raises() -> None:
    with handling_signals(), deferring():
        assert requested() is None
        assert interrupts._handler(signal.SIGINT, None) is None
        assert requested() == signal.SIGINT and received() == signal.SIGINT
        with pytest.raises(Interrupted) as info:
            interrupts._handler(signal.SIGTERM, None)
        assert info.value.signum == signal.SIGTERM


def test_requested_is_none_once_the_loop_stopped_deferring_but_received_remembers() -> None:
    with handling_signals():
        with deferring():
            interrupts._handler(signal.SIGTERM, None)
            assert requested() == signal.SIGTERM
        assert requested() is None
    assert received() == signal.SIGTERM  # also after handling_signals ended


def test_a_new_handling_signals_forgets_the_last_signal() -> None:
    with handling_signals(), deferring():
        interrupts._handler(signal.SIGTERM, None)
    with handling_signals():
        assert received() is None


def test_deferring_without_handling_signals_defers_nothing() -> None:
    with deferring():
        assert interrupts._state["deferring"] is False
        assert requested() is None


def test_deferring_disabled_lets_the_first_signal_raise() -> None:
    with handling_signals(), deferring(enabled=False):
        with pytest.raises(Interrupted):
            interrupts._handler(signal.SIGTERM, None)


def test_deferring_puts_back_the_outer_setting_also_after_an_error() -> None:
    with handling_signals(), deferring():
        with pytest.raises(RuntimeError):
            with deferring(enabled=False):
                assert interrupts._state["deferring"] is False
                raise RuntimeError("inside")
        assert interrupts._state["deferring"] is True


def test_handling_signals_puts_back_the_state_it_found_after_an_error() -> None:
    before = dict(interrupts._state)
    with pytest.raises(ValueError):
        with handling_signals():
            raise ValueError("start-up failed")
    assert interrupts._state == before


def test_a_real_signal_is_deferred_inside_the_loop_and_raised_outside_it() -> None:
    if threading.current_thread() is not threading.main_thread():  # the handler would not be installed
        pytest.skip("signals reach Python handlers in the main thread only")
    with handling_signals():
        with deferring():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the interpreter runs the handler between bytecodes
                if requested() is not None:
                    break
            assert requested() == signal.SIGTERM
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        assert info.value.signum == signal.SIGINT


def test_outside_the_main_thread_handling_signals_does_nothing() -> None:
    seen: dict[str, Any] = {}

    def work() -> None:
        with handling_signals():
            seen["installed"] = interrupts._state["installed"]
            seen["handler"] = signal.getsignal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"installed": False, "handler": before}


def test_a_worker_never_escalates_while_its_loop_defers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts.os, "_exit", lambda code: (_ for _ in ()).throw(Exited(code)))
    install_for_worker(idle=lambda: False)
    assert signal.getsignal(signal.SIGTERM) is interrupts._handler
    with deferring():
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            assert interrupts._handler(signum, None) is None
        assert requested() == signal.SIGTERM
    with pytest.raises(Interrupted):  # busy but outside the loop: raise
        interrupts._handler(signal.SIGTERM, None)


def test_an_idle_worker_exits_at_once_with_128_plus_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts.os, "_exit", lambda code: (_ for _ in ()).throw(Exited(code)))
    install_for_worker(idle=lambda: True)
    with pytest.raises(Exited) as info:
        interrupts._handler(signal.SIGTERM, None)
    assert info.value.args == (143,)
    assert received() == signal.SIGTERM
