"""Instrumented resources for the reliability tests: they raise, hang or succeed.

A :class:`Lab` makes resources whose factory, ping and close behave as told,
counts every call, and checks the cap from the resources' own side: a
resource exists from the moment its factory starts until its ``close()``
returned (or the factory raised), unless the pool abandoned it first (its
``pool.resource.abandoned`` event names the resource id). Hanging user code
waits on :attr:`Lab.gate`, which the test sets at the end, so no thread
outlives the test.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pooler_actors import AcquireTimeout, FactoryError, Pool, TooManyWaiters
from pooler_actors._messages import HealthTick
from pooler_actors.resource import BaseResourceActor

OK = "ok"
RAISE = "raise"
HANG = "hang"
BEHAVIOURS = (OK, RAISE, HANG)


def current_rid() -> int | None:
    """The resource id of the resource actor running this code, if any.

    Resource actors may share executor threads, so this looks up the stack
    for the actor whose ``on_start``/``on_receive``/``_close`` called us.
    """
    frame = sys._getframe(1)
    while frame is not None:
        actor = frame.f_locals.get("self")
        if isinstance(actor, BaseResourceActor):
            return actor.rid
        frame = frame.f_back  # type: ignore[assignment]
    return None


class Boom(Exception):
    """What a faulty factory, ping or close raises."""


@dataclass
class Plan:
    """How one resource's factory, ping and close behave."""

    factory: str = OK
    ping: str = OK
    close: str = OK

    @classmethod
    def random(cls, rng: random.Random, weights: tuple[int, int, int]) -> Plan:
        """A plan whose behaviours are drawn with ``weights`` (ok, raise, hang)."""
        pick = rng.choices(BEHAVIOURS, weights=weights, k=3)
        return cls(*pick)


class Recorder:
    """A structlog-like logger that records every pool event, thread-safely."""

    def __init__(self, on_event: Callable[[str, dict[str, Any]], None] | None = None):
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._on_event = on_event

    def _log(self, event: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(event, fields)
        with self._cond:
            self.events.append((event, fields))
            self._cond.notify_all()

    debug = info = warning = error = critical = _log

    def named(self, name: str) -> list[dict[str, Any]]:
        """The fields of every recorded event called ``name``."""
        with self._cond:
            return [f for e, f in self.events if e == name]

    def wait(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Wait for an event called ``name`` whose fields satisfy ``predicate``."""
        with self._cond:
            found: list[dict[str, Any]] = []

            def seen() -> bool:
                found[:] = [f for e, f in self.events if e == name and predicate(f)]
                return bool(found)

            if not self._cond.wait_for(seen, timeout):
                raise AssertionError(f"no {name!r} event within {timeout} s")
            return found[0]


@dataclass(eq=False)
class Res:
    """One instrumented resource."""

    lab: Lab
    key: Hashable
    serial: int
    plan: Plan
    rid: int | None
    unhealthy: bool = False
    pings: int = 0
    closes: int = 0
    closing: bool = False

    def ping(self) -> None:
        self.lab.check_rid(self)
        with self.lab.lock:
            self.pings += 1
            if self.closing or self.closes:
                self.lab.violations.append(f"ping of {self.key!r} while/after close")
        self.lab.act(self.plan.ping, "ping")
        if self.unhealthy:
            raise Boom(f"{self.key!r} is unhealthy")

    def close(self) -> None:
        lab = self.lab
        with lab.lock:
            self.closing = True
        try:
            lab.act(self.plan.close, "close")
        finally:
            with lab.lock:
                self.closing = False
                self.closes += 1
                lab.gone(self.rid)
                lab.close_log.append(self.key)


@dataclass(eq=False)
class Lab:
    """Makes instrumented resources and checks the cap as they come and go."""

    cap: int
    plans: Callable[[Hashable, int], Plan] = lambda _key, _n: Plan()
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    resources: list[Res] = field(default_factory=list)
    factory_calls: list[Hashable] = field(default_factory=list)
    close_log: list[Hashable] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    hanging: int = 0
    alive: set[int] = field(default_factory=set)  # rids that exist, by our count
    abandoned: set[int] = field(default_factory=set)
    max_alive: int = 0

    def __post_init__(self) -> None:
        self.recorder = Recorder(self._on_event)

    # --- the pool's side ----------------------------------------------------

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "pool.resource.abandoned":
            rid = fields.get("rid")
            with self.lock:
                if rid is None:
                    self.violations.append(f"abandoned event without rid: {fields}")
                else:
                    self.abandoned.add(rid)

    def check_rid(self, res: Res) -> None:
        if res.rid is not None and current_rid() not in (res.rid, None):
            self.violations.append(f"{res.key!r} used from another resource actor")

    def gone(self, rid: int | None) -> None:
        """A resource stopped existing (close returned or factory raised)."""
        if rid is not None:
            self.alive.discard(rid)

    def act(self, behaviour: str, what: str) -> None:
        """Do what the plan says: return, raise, or hang until the gate opens."""
        if behaviour == OK:
            return
        with self.lock:
            self.faults[f"{what}_{behaviour}"] += 1
        if behaviour == RAISE:
            raise Boom(f"injected {what} failure")
        with self.lock:
            self.hanging += 1
        self.gate.wait()

    def factory(self, key: Hashable) -> Res:
        """The pool's factory: counts the call, checks the cap, then obeys the plan."""
        rid = current_rid()
        with self.lock:
            n = len(self.factory_calls)
            self.factory_calls.append(key)
            if rid is None:
                self.violations.append("factory ran outside a resource actor")
            else:
                self.alive.add(rid)
                existing = len(self.alive - self.abandoned)
                self.max_alive = max(self.max_alive, existing)
                if existing > self.cap:
                    self.violations.append(
                        f"cap exceeded: {existing} resources exist, cap {self.cap}"
                    )
        plan = self.plans(key, n)
        try:
            self.act(plan.factory, "factory")
        except Boom:
            with self.lock:
                self.gone(rid)
            raise
        res = Res(self, key, n, plan, rid)
        with self.lock:
            self.resources.append(res)
        return res

    # --- checks ---------------------------------------------------------------

    def created(self) -> list[Res]:
        with self.lock:
            return list(self.resources)

    def close_counts(self) -> dict[int, int]:
        """Serial → how many times that resource was closed."""
        with self.lock:
            return {r.serial: r.closes for r in self.resources}

    def not_closed_once(self) -> list[tuple[Hashable, int]]:
        """Resources closed zero or several times: ``(key, closes)``."""
        with self.lock:
            return [(r.key, r.closes) for r in self.resources if r.closes != 1]


@dataclass(frozen=True)
class OpMix:
    """How a random client splits its work: cumulative shares of each operation.

    An operation is an acquire below ``acquire``, a release below ``release``,
    a health check below ``health``, a release-all below ``release_all``, and
    otherwise a stats/contains check of the cap.
    """

    acquire: float
    release: float
    health: float
    release_all: float
    timeouts: tuple[float | None, ...]
    unhealthy: float  # the chance an acquired resource is made unhealthy


def random_op(
    pool: Pool[Any, Any],
    rng: random.Random,
    *,
    keys: list[str],
    cap: int,
    mix: OpMix,
    counts: Counter[str],
    errors: list[str],
) -> None:
    """One random client operation; expected failures are counted, bugs listed."""
    op = rng.random()
    key = rng.choice(keys)
    try:
        if op < mix.acquire:
            res = pool.acquire(key, timeout=rng.choice(mix.timeouts))
            if res.key != key:
                errors.append(f"acquire({key!r}) returned {res.key!r}")
            if rng.random() < mix.unhealthy:
                res.unhealthy = True
                counts["unhealthy"] += 1
        elif op < mix.release:
            pool.release(key)
        elif op < mix.health:
            pool.actor_ref.tell(HealthTick())
        elif op < mix.release_all:
            pool.release_all()
        else:
            stats = pool.stats()
            if stats.open_resources > cap:
                errors.append(f"open_resources {stats.open_resources} > {cap}")
            pool.contains(key)
        counts["ok"] += 1
    except (AcquireTimeout, FactoryError, TooManyWaiters) as error:
        counts[type(error).__name__] += 1
    except Exception as error:  # anything else is a bug
        errors.append(f"{type(error).__name__}: {error}")


def seeded_plans(
    seed: int, weights: tuple[int, int, int]
) -> Callable[[Hashable, int], Plan]:
    """A ``Lab`` plan source: each new resource's behaviour drawn from ``seed``."""
    rng = random.Random(seed)
    lock = threading.Lock()  # factories run on several pool threads at once

    def plans(_key: Hashable, _n: int) -> Plan:
        with lock:
            return Plan.random(rng, weights)

    return plans
