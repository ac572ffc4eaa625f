"""The sailor's pure parts: function calling, message shaping, leak detection."""

from __future__ import annotations

import asyncio
from typing import Any

from flowrun.sailor.function import Runner, as_message, call_flexibly
from flowrun.sailor.leaks import LeakWatch


def test_call_flexibly_passes_only_declared_parameters() -> None:
    assert call_flexibly(lambda msg: msg, 1, 2, 3, 4) == 1
    assert call_flexibly(lambda msg, cfg: (msg, cfg), 1, 2, 3, 4) == (1, 2)
    assert call_flexibly(lambda *a: a, 1, 2) == (1, 2)


def test_runner_collects_return_yield_async_and_none() -> None:
    runner = Runner()

    def returns(msg: Any) -> dict[str, int]:
        return {"a": 1}

    def yields(msg: Any) -> Any:
        yield {"a": 1}
        yield {"a": 2}

    async def awaits(msg: Any) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"a": 3}

    async def agen(msg: Any) -> Any:
        yield {"a": 4}

    assert runner.run(returns, {}) == [{"a": 1}]
    assert runner.run(yields, {}) == [{"a": 1}, {"a": 2}]
    assert runner.run(awaits, {}) == [{"a": 3}]
    assert runner.run(agen, {}) == [{"a": 4}]
    assert runner.run(lambda m: None, {}) == []
    runner.close()


def test_as_message_wraps_bodies_and_inherits_headers() -> None:
    parent = {"headers": {"seq": 7}, "passthrough": {"x": 1}}
    m = as_message({"email": "a@b"}, parent)
    assert m["body"] == {"email": "a@b"}
    assert m["headers"] == {"seq": 7}
    assert m["passthrough"] == {"x": 1}
    full = as_message({"body": 5, "headers": {"h": 1}}, parent)
    assert full["body"] == 5 and full["headers"] == {"seq": 7, "h": 1}
    # a body that merely has a "body" field among others stays a body
    assert as_message({"body": 1, "other": 2}, None)["body"] == {"body": 1, "other": 2}


def test_leak_watch_flags_steady_growth_once() -> None:
    watch = LeakWatch(window=5)
    reports = [watch.observe(threads, 10) for threads in range(1, 12)]
    assert sum(r is not None for r in reports) == 1
    assert "threads grew" in next(r for r in reports if r)


def test_leak_watch_ignores_one_listener_and_plateaus() -> None:
    watch = LeakWatch(window=5)
    samples = [1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]  # one listener, a transient thread
    assert all(watch.observe(t, 10 + (i % 2)) is None for i, t in enumerate(samples))


SIGTERM_STORM = """
import faulthandler, os, signal, sys, threading
faulthandler.dump_traceback_later(40, exit=True)  # a hang shows where it is
from flowrun.sailor.runtime import stop_on_signals

for n in range(int(sys.argv[1])):
    stopping = threading.Event()
    stop_on_signals(stopping)

    def term(n: int = n) -> None:
        threading.Event().wait(0.001 * (n % 5))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term, daemon=True).start()
    while not stopping.wait(0):  # the main thread inside Event.wait, holding its lock
        pass
print("stopped every time")
"""


def test_a_sigterm_while_the_main_thread_waits_always_stops_the_sailor() -> None:
    # Event.set() called by the handler itself waited forever on the lock of the
    # Event.wait() it interrupted: in each of 5 runs of this storm (100 SIGTERMs).
    from tests.conftest import python_child

    done = python_child(SIGTERM_STORM, "100")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped every time" in done.stdout
