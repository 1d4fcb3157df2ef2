"""An application actor that owns a pool, survives the pool's failure and
restarts it.

``SessionService`` is a pykka actor. In ``on_start`` it starts a
``PoolSupervisor`` of per-tenant sessions and *watches* it; its handlers ask
the pool for sessions; in ``on_stop`` it stops the pool. The pool here is a
``PoolSupervisor`` subclass extended with one custom told message,
``Audit``, whose handler has a bug: sent while no session is open, it divides
by zero. A handler that raises on a *told* message fails the supervisor: it
closes its sessions, fails its waiting callers with ``PoolClosedError`` and
tells its watchers ``PoolStopped(name, "failed: ...")``. The service reacts
by starting a fresh pool and keeps serving. ``ActorRegistry.stop_all()``
then shuts the whole tree down, closing every session exactly once.

Run it: ``.venv/bin/python examples/supervision_tree.py``
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import pykka
import structlog

from pooler_actors import (
    Acquire,
    PoolOptions,
    PoolRef,
    PoolStopped,
    PoolSupervisor,
    ReleaseAll,
    Watch,
)

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


class Session:
    """A stand-in for a per-tenant session (a database or API client)."""

    opened: ClassVar[list[Session]] = []  # every session ever made, to check the closes

    def __init__(self, tenant: Hashable) -> None:
        self.tenant = tenant
        self.closes = 0
        self.queries = 0
        Session.opened.append(self)

    def query(self, text: str) -> str:
        self.queries += 1
        return f"{self.tenant}: {text} -> ok"

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closes += 1


@dataclass(frozen=True)
class Audit:
    """A custom message: log the mean number of queries per open session."""


class AuditedPool(PoolSupervisor):
    """A pool supervisor extended with a (buggy) ``Audit`` handler."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Audit):
            stats = self.stats()
            # The bug: no guard for an empty pool.
            mean = stats.acquires / stats.open_resources
            print(f"audit: {mean:.1f} acquires per open session")
            return None
        return super().on_receive(message)


@dataclass(frozen=True)
class Query:
    tenant: str
    text: str


class SessionService(pykka.ThreadingActor):
    """Owns a pool of sessions, asks it from its handlers, restarts it on failure."""

    def __init__(self, restarted: threading.Event) -> None:
        super().__init__()
        self.generation = 0
        self.pool: PoolRef | None = None
        self.restarted = restarted

    def _start_pool(self) -> PoolRef:
        self.generation += 1
        options = PoolOptions(
            max_open_resources=4,
            health_check_interval=None,
            name=f"sessions-{self.generation}",
        )
        pool = AuditedPool.start(Session, options)
        pool.tell(Watch(self.actor_ref))  # tell me with PoolStopped when it stops
        return pool

    def on_start(self) -> None:
        self.pool = self._start_pool()

    def on_stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()  # closes every session; a no-op if already stopped

    def on_receive(self, message: Any) -> Any:
        assert self.pool is not None
        if isinstance(message, Query):
            session = self.pool.ask(Acquire(message.tenant, timeout=5.0))
            return session.query(message.text)
        if isinstance(message, PoolStopped):
            if message.name != self.pool.pool_name:
                return None  # about a pool this service already replaced
            print(f"service: pool {message.name} stopped ({message.reason})")
            if message.reason.startswith("failed"):
                self.pool = self._start_pool()
                print(f"service: restarted the pool as {self.pool.pool_name}")
                self.restarted.set()
            return None
        if message == "audit":
            self.pool.tell(Audit())
            return None
        if message == "pool":
            return self.pool
        return super().on_receive(message)


def main() -> None:
    restarted = threading.Event()
    service = SessionService.start(restarted)
    try:
        for tenant in ("acme", "globex"):
            print(service.ask(Query(tenant, "SELECT 1")))
        service.tell("audit")  # works: two sessions are open
        first_pool = cast(PoolRef, service.ask("pool"))
        print("releasing every session, then auditing an empty pool...")
        first_pool.ask(ReleaseAll())  # actors and threads may share the ref
        service.tell("audit")  # the bug: ZeroDivisionError fails the supervisor

        if not restarted.wait(10):
            raise SystemExit("the service did not restart its pool")
        print("first pool alive:", first_pool.is_alive())
        print(service.ask(Query("acme", "SELECT 2")))
        print("service alive:", service.is_alive())
    finally:
        # Stops every actor, newest first: sessions, pools, then the service.
        pykka.ActorRegistry.stop_all()
    closes = [s.closes for s in Session.opened]
    each_once = all(c == 1 for c in closes)
    print(f"all actors stopped; {len(closes)} sessions, each closed once: {each_once}")


if __name__ == "__main__":
    main()
