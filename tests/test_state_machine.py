"""A hypothesis state machine drives a Pool against a simple model.

Rules: acquire with and without a timeout, acquire that queues (in a
thread), release, release-all, make a resource unhealthy, run a health check
(by telling the supervisor ``HealthTick`` and waiting for it to finish), close.
After every step the pool must agree with the model: the cap holds,
``contains``, ``all()``, ``open_resources`` and ``wait_count`` match, every
resource the pool dropped was closed exactly once and none it holds was.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import pool_threads, wait_for
from faults import RAISE, Lab, Plan, Res
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pooler_actors import AcquireTimeout, FactoryError, Pool, PoolClosedError
from pooler_actors._messages import HealthTick

CAP = 2
GOOD_KEYS = ["a", "b", "c", "d"]
BAD = "bad"  # its factory always raises
KEYS = st.sampled_from([*GOOD_KEYS, BAD])
MAX_WAITERS = 3


@dataclass(eq=False)
class Waiter:
    """A caller blocked in ``acquire`` in its own thread."""

    key: str
    thread: threading.Thread
    out: list[Any] = field(default_factory=list)


class PoolMachine(RuleBasedStateMachine):
    """The pool under test and its model: open resources by key, waiters in order."""

    @initialize()
    def start(self) -> None:
        self.lab = Lab(CAP, lambda key, _n: Plan(factory=RAISE if key == BAD else "ok"))
        self.pool: Pool[str, Res] = Pool(
            self.lab.factory,
            max_open_resources=CAP,
            health_check_interval=None,
            logger=self.lab.recorder,
        )
        self.open: dict[str, Res] = {}  # the model
        self.waiting: list[Waiter] = []
        self.closed = False
        self.checks = 0
        self.steps = 0

    def teardown(self) -> None:
        if not hasattr(self, "pool"):
            return
        self.pool.close()
        for waiter in self.waiting:
            waiter.thread.join(10)
            assert waiter.out and isinstance(waiter.out[0], PoolClosedError)
        self.lab.gate.set()
        wait_for(lambda: not pool_threads())
        assert self.lab.not_closed_once() == []
        assert not self.lab.violations, self.lab.violations

    # --- the model's grants ---------------------------------------------------

    def _grant(self) -> None:
        """Slots freed: the oldest waiters get them, as the pool must do."""
        while self.waiting and len(self.open) < CAP:
            key = self.waiting[0].key
            served = [w for w in self.waiting if w.key == key]  # they join one creation
            self.waiting = [w for w in self.waiting if w.key != key]
            for waiter in served:
                waiter.thread.join(10)
                assert not waiter.thread.is_alive(), f"waiter for {key} not granted"
            outs = [w.out[0] for w in served]
            if key == BAD:
                assert all(isinstance(o, FactoryError) for o in outs), outs
                continue
            assert all(isinstance(o, Res) and o is outs[0] for o in outs), outs
            self.open[key] = outs[0]
        self._settle()

    def _settle(self) -> None:
        """Wait until the pool's asynchronous work (closes, grants) is done."""
        wait_for(
            lambda: (
                (s := self.pool.stats()).open_resources == len(self.open)
                and s.wait_count == len(self.waiting)
            )
        )

    # --- rules ------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(data=st.data())
    def acquire(self, data: st.DataObject) -> None:
        """Acquire without a timeout: at once, or queued in a thread at the cap."""
        # Mostly a key that is not open, so that the cap is reached and callers queue.
        new = [k for k in GOOD_KEYS if k not in self.open]
        key = data.draw(st.one_of(st.sampled_from(new), KEYS) if new else KEYS)
        if key not in self.open and len(self.open) >= CAP:
            self._acquire_queued(key)
        elif key == BAD:
            with pytest.raises(FactoryError):
                self.pool.acquire(key)
        else:
            res = self.pool.acquire(key)
            if key in self.open:
                assert res is self.open[key]
            else:
                assert res.key == key and res.closes == 0
                self.open[key] = res

    @precondition(lambda self: not self.closed)
    @rule(key=KEYS, zero=st.booleans())
    def acquire_with_timeout(self, key: str, zero: bool) -> None:
        full = key not in self.open and len(self.open) >= CAP
        # At the cap a short deadline must pass; below it, a creation must finish
        # (timeout=0 awaits a creation it starts; 10 s is only a hang guard).
        timeout = (0 if zero else 0.01) if full else (0 if zero else 10)
        if key in self.open:
            assert self.pool.acquire(key, timeout=timeout) is self.open[key]
        elif full:
            with pytest.raises(AcquireTimeout):
                self.pool.acquire(key, timeout=timeout)
        elif key == BAD:
            with pytest.raises(FactoryError):
                self.pool.acquire(key, timeout=timeout)
        else:
            res = self.pool.acquire(key, timeout=timeout)
            assert res.key == key
            self.open[key] = res

    def _acquire_queued(self, key: str) -> None:
        if len(self.waiting) >= MAX_WAITERS:
            return
        waiter = Waiter(key, threading.Thread(target=lambda: None))

        def run() -> None:
            try:
                waiter.out.append(self.pool.acquire(key))
            except Exception as error:
                waiter.out.append(error)

        waiter.thread = threading.Thread(target=run, daemon=True)
        waiter.thread.start()
        self.waiting.append(waiter)
        wait_for(lambda: self.pool.stats().wait_count == len(self.waiting))

    @precondition(lambda self: not self.closed)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        # Mostly an open key, so that slots free while callers wait.
        open_keys = st.sampled_from(sorted(self.open)) if self.open else KEYS
        key = data.draw(st.one_of(open_keys, KEYS))
        was_open = key in self.open
        assert self.pool.release(key) is was_open
        if was_open:
            res = self.open.pop(key)
            assert res.closes == 1  # Release replies after the close finished
            self._grant()

    @precondition(lambda self: not self.closed)
    @rule()
    def release_all(self) -> None:
        self.pool.release_all()
        dropped = list(self.open.values())
        self.open.clear()
        assert [r.closes for r in dropped] == [1] * len(dropped)
        self._grant()

    @precondition(lambda self: not self.closed and bool(self.open))
    @rule(data=st.data())
    def make_unhealthy(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.open)))
        self.open[key].unhealthy = True

    @precondition(lambda self: not self.closed)
    @rule()
    def health_check(self) -> None:
        finished = self.lab.recorder.named("pool.health.finished")
        self.pool.actor_ref.tell(HealthTick())
        wait_for(
            lambda: len(self.lab.recorder.named("pool.health.finished")) > len(finished)
        )
        self.checks += 1
        sick = [k for k, r in self.open.items() if r.unhealthy]
        report = self.lab.recorder.named("pool.health.finished")[len(finished)]
        assert (report["pinged"], report["evicted"]) == (len(self.open), len(sick))
        for key in sick:
            del self.open[key]
        self._grant()

    @precondition(lambda self: not self.closed and self.steps >= 10)
    @rule()
    def close(self) -> None:
        self.pool.close()
        self.closed = True
        for waiter in self.waiting:
            waiter.thread.join(10)
            assert waiter.out and isinstance(waiter.out[0], PoolClosedError)
        self.waiting.clear()
        self.open.clear()

    @precondition(lambda self: self.closed)
    @rule(key=KEYS)
    def use_after_close(self, key: str) -> None:
        with pytest.raises(PoolClosedError):
            self.pool.acquire(key)
        with pytest.raises(PoolClosedError):
            self.pool.release(key)

    # --- invariants -----------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "pool"):
            return
        self.steps += 1
        assert not self.lab.violations, self.lab.violations
        if self.closed:
            wait_for(lambda: not pool_threads())
            assert self.lab.not_closed_once() == []
            return
        stats = self.pool.stats()
        assert stats.open_resources <= CAP
        assert stats.open_resources == len(self.open)
        assert stats.wait_count == len(self.waiting)
        assert stats.health_checks == self.checks
        for key in [*GOOD_KEYS, BAD]:
            assert self.pool.contains(key) is (key in self.open), key
        listed = list(self.pool.all())
        assert [k for k, _ in listed] == list(self.open)  # creation order
        assert dict(listed) == self.open
        assert all(v is self.open[k] for k, v in listed)
        held = {id(r) for r in self.open.values()}
        for res in self.lab.created():
            expected = 0 if id(res) in held else 1
            assert res.closes == expected, (res.key, res.closes)


PoolMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolStateMachine = PoolMachine.TestCase
