"""psycopg 3 connections in a pool, with psycopg_pool's end-of-block rules.

Install with the `psycopg` extra (`pip install 'pooler_actors[psycopg]'`).
The pool holds plain `psycopg.Connection` (or `AsyncConnection`) objects; this
module gives it what it needs for them, on the public API only:

- [connector][pooler_actors.psycopg.connector] /
  [async_connector][pooler_actors.psycopg.async_connector]: a factory that
  opens a connection for a key (the key is the conninfo, or a function maps
  it to one);
- [ping][pooler_actors.psycopg.ping] / [close][pooler_actors.psycopg.close]
  and their `async_` twins: the pool's `ping=` and `close=` options;
- [connection][pooler_actors.psycopg.connection]: `with connection(pool,
  key) as conn:` (or `async with` for an `AsyncPool`) checks a connection
  out, and at the end of the block does what psycopg_pool's
  `pool.connection()` does: commit on success, roll back on an exception,
  roll back (with a `pool.psycopg.rollback` warning event) a connection
  still in a transaction, and check a broken or closed connection in as
  broken, so the pool closes it and the next lease gets a fresh one;
- [checkin][pooler_actors.psycopg.checkin] /
  [async_checkin][pooler_actors.psycopg.async_checkin]: the same clean-up for
  a lease taken with `pool.checkout` (no commit: a transaction left open is
  rolled back, with the warning).

Example:
    ```python
    from pooler_actors import Pool
    from pooler_actors import psycopg as pg

    pool = Pool(pg.connector(), ping=pg.ping, close=pg.close, max_holders=1)
    with pg.connection(pool, "dbname=acme") as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    # committed here
    ```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload

import psycopg
from psycopg import pq
from psycopg.rows import AsyncRowFactory, RowFactory, TupleRow

from pooler_actors.aio import AsyncPool
from pooler_actors.lease import Lease
from pooler_actors.pool import Pool

__all__ = [
    "AsyncConnectionBlock",
    "ConnectionBlock",
    "async_checkin",
    "async_close",
    "async_connector",
    "async_ping",
    "checkin",
    "close",
    "connection",
    "connector",
    "is_broken",
    "ping",
]

K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound="psycopg.Connection[Any]")
A = TypeVar("A", bound="psycopg.AsyncConnection[Any]")
C_co = TypeVar("C_co", covariant=True)
R = TypeVar("R")

_TX = pq.TransactionStatus
#: Statuses in which a returned connection is rolled back, with a warning.
_IN_TRANSACTION = (_TX.INTRANS, _TX.INERROR)
#: Statuses in which a returned connection cannot be reused.
_UNUSABLE = (_TX.ACTIVE, _TX.UNKNOWN)


# -- factories -------------------------------------------------------------------


@overload
def connector(
    conninfo: None = None, *, row_factory: RowFactory[R], **kwargs: Any
) -> Callable[[str], psycopg.Connection[R]]: ...
@overload
def connector(
    conninfo: None = None, *, row_factory: None = None, **kwargs: Any
) -> Callable[[str], psycopg.Connection[TupleRow]]: ...
@overload
def connector(
    conninfo: Callable[[K], str], *, row_factory: RowFactory[R], **kwargs: Any
) -> Callable[[K], psycopg.Connection[R]]: ...
@overload
def connector(
    conninfo: Callable[[K], str], *, row_factory: None = None, **kwargs: Any
) -> Callable[[K], psycopg.Connection[TupleRow]]: ...
def connector(
    conninfo: Callable[[Any], str] | None = None, **kwargs: Any
) -> Callable[[Any], psycopg.Connection[Any]]:
    """A factory: `psycopg.connect(conninfo(key), **kwargs)` for each key.

    Typed as what it opens: `Pool(connector(), ...)` is a
    `Pool[str, psycopg.Connection[TupleRow]]` (`Connection[R]` with a
    `row_factory`), and with `conninfo` the keys are what it takes.

    Args:
        conninfo: maps a key to its connection string; by default the key
            is the connection string (`"dbname=acme"`, a URL).
        kwargs: passed to `psycopg.connect` (`autocommit=True`,
            `row_factory=...`, `connect_timeout=5`, ...).
    """

    def connect(key: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(key if conninfo is None else conninfo(key), **kwargs)

    return connect


@overload
def async_connector(
    conninfo: None = None, *, row_factory: AsyncRowFactory[R], **kwargs: Any
) -> Callable[[str], Awaitable[psycopg.AsyncConnection[R]]]: ...
@overload
def async_connector(
    conninfo: None = None, *, row_factory: None = None, **kwargs: Any
) -> Callable[[str], Awaitable[psycopg.AsyncConnection[TupleRow]]]: ...
@overload
def async_connector(
    conninfo: Callable[[K], str], *, row_factory: AsyncRowFactory[R], **kwargs: Any
) -> Callable[[K], Awaitable[psycopg.AsyncConnection[R]]]: ...
@overload
def async_connector(
    conninfo: Callable[[K], str], *, row_factory: None = None, **kwargs: Any
) -> Callable[[K], Awaitable[psycopg.AsyncConnection[TupleRow]]]: ...
def async_connector(
    conninfo: Callable[[Any], str] | None = None, **kwargs: Any
) -> Callable[[Any], Awaitable[psycopg.AsyncConnection[Any]]]:
    """An `AsyncPool` factory: `await psycopg.AsyncConnection.connect(...)`,
    typed as [connector][pooler_actors.psycopg.connector] is."""

    async def connect(key: Any) -> psycopg.AsyncConnection[Any]:
        dsn = key if conninfo is None else conninfo(key)
        return await psycopg.AsyncConnection.connect(dsn, **kwargs)

    return connect


# -- ping and close (the pool's ping= and close=) --------------------------------


def ping(conn: psycopg.Connection[Any]) -> None:
    """Check `conn` with an empty query (raises if it is broken).

    The pool pings only a connection nobody holds, so it is idle; one found
    in a transaction is checked in autocommit, as psycopg_pool does.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    if conn.autocommit or conn.info.transaction_status != _TX.IDLE:
        conn.execute("")
        return
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        conn.autocommit = False


async def async_ping(conn: psycopg.AsyncConnection[Any]) -> None:
    """[ping][pooler_actors.psycopg.ping] for an `AsyncConnection`."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    if conn.autocommit or conn.info.transaction_status != _TX.IDLE:
        await conn.execute("")
        return
    await conn.set_autocommit(True)
    try:
        await conn.execute("")
    finally:
        await conn.set_autocommit(False)


def close(conn: psycopg.Connection[Any]) -> None:
    """Close `conn` (the pool's `close=`)."""
    conn.close()


async def async_close(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close an `AsyncConnection` (an `AsyncPool`'s `close=`)."""
    await conn.close()


def is_broken(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether `conn` cannot be used again: closed, or its link is BAD."""
    return bool(conn.closed or conn.broken or conn.pgconn.status == pq.ConnStatus.BAD)


# -- the end of a block ----------------------------------------------------------


def _warn(pool: Any, key: Hashable, status: pq.TransactionStatus) -> None:
    events = getattr(pool.actor_ref, "events", None)
    if events is not None:
        events.warning(
            "pool.psycopg.rollback", key, None, transaction_status=status.name
        )


def _end(
    pool: Any, lease: Lease[Any, Any], error: BaseException | None, *, finish: bool
) -> tuple[bool, BaseException | None]:
    """Commit or roll back `lease`'s connection; whether it is broken, and
    the commit's own error (to raise once the lease is checked in)."""
    conn: psycopg.Connection[Any] = lease.resource
    raised: BaseException | None = None
    # IDLE: a sound link (libpq says UNKNOWN for a bad or closed one) with no
    # transaction open (autocommit, or ended in the block): nothing to do.
    status = conn.pgconn.transaction_status
    if status == _TX.IDLE:
        return False, None
    if is_broken(conn):
        return True, None
    if status in _UNUSABLE:  # a query still running, or a lost link
        return True, None
    try:
        if finish and error is None:
            try:
                conn.commit()
            except psycopg.Error as exc:
                raised = exc
        elif finish:
            conn.rollback()
        status = conn.info.transaction_status
        if status in _IN_TRANSACTION:
            _warn(pool, lease.key, status)
            conn.rollback()
    except psycopg.Error:
        return True, raised
    return is_broken(conn) or conn.info.transaction_status != _TX.IDLE, raised


async def _aend(
    pool: Any, lease: Lease[Any, Any], error: BaseException | None, *, finish: bool
) -> tuple[bool, BaseException | None]:
    """[_end][pooler_actors.psycopg._end] for an `AsyncConnection`."""
    conn: psycopg.AsyncConnection[Any] = lease.resource
    raised: BaseException | None = None
    status = conn.pgconn.transaction_status  # (see `_end`)
    if status == _TX.IDLE:
        return False, None
    if is_broken(conn):
        return True, None
    if status in _UNUSABLE:
        return True, None
    try:
        if finish and error is None:
            try:
                await conn.commit()
            except psycopg.Error as exc:
                raised = exc
        elif finish:
            await conn.rollback()
        status = conn.info.transaction_status
        if status in _IN_TRANSACTION:
            _warn(pool, lease.key, status)
            await conn.rollback()
    except psycopg.Error:
        return True, raised
    return is_broken(conn) or conn.info.transaction_status != _TX.IDLE, raised


def checkin(pool: Pool[K, C], lease: Lease[K, C]) -> bool:
    """`pool.checkin(lease)`, after psycopg_pool's clean-up of its connection.

    A connection still in a transaction (or in a failed one) is rolled back,
    with a `pool.psycopg.rollback` warning event; a broken or closed one is
    checked in as broken. Returns what `pool.checkin` returns.
    """
    broken, _ = _end(pool, lease, None, finish=False)
    return pool.checkin(lease, broken=broken)


async def async_checkin(pool: AsyncPool[K, A], lease: Lease[K, A]) -> bool:
    """[checkin][pooler_actors.psycopg.checkin] for an `AsyncPool`."""
    broken, _ = await _aend(pool, lease, None, finish=False)
    return await pool.checkin(lease, broken=broken)


class _Block:
    """`connection(pool, key)`: a `with` block for a `Pool`, `async with` for
    an `AsyncPool`. One object is good for one block, as `pool.lease()`'s:
    entering it again (nested, or from another thread) is a `RuntimeError`."""

    __slots__ = ("_key", "_lease", "_once", "_pool", "_timeout")

    def __init__(self, pool: Any, key: Hashable, timeout: float | None) -> None:
        self._pool = pool
        self._key = key
        self._timeout = timeout
        self._lease: Lease[Any, Any] | None = None
        self._once = [True]  # popped by the one enter (one atomic op)

    def _enter_once(self) -> None:
        try:
            self._once.pop()
        except IndexError:
            raise RuntimeError(
                f"this connection(pool, {self._key!r}) block was entered "
                "already: one object is good for one with-statement"
            ) from None

    def __enter__(self) -> Any:
        if not isinstance(self._pool, Pool):
            raise TypeError(
                f"`with connection(pool, key)` needs a Pool, got {self._pool!r} "
                "(use `async with` for an AsyncPool)"
            )
        self._enter_once()
        self._lease = self._pool.checkout(self._key, self._timeout)
        return self._lease.resource

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        raised: BaseException | None = None
        broken = True
        try:
            broken, raised = _end(self._pool, lease, exc, finish=True)
        finally:
            self._pool.checkin(lease, broken=broken)
        if raised is not None:
            raise raised

    async def __aenter__(self) -> Any:
        if not isinstance(self._pool, AsyncPool):
            raise TypeError(
                f"`async with connection(pool, key)` needs an AsyncPool, got "
                f"{self._pool!r} (use `with` for a Pool)"
            )
        self._enter_once()
        self._lease = await self._pool.checkout(self._key, self._timeout)
        return self._lease.resource

    async def __aexit__(
        self, exc_type: Any, exc: BaseException | None, tb: Any
    ) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        raised: BaseException | None = None
        broken = True
        try:
            broken, raised = await _aend(self._pool, lease, exc, finish=True)
        finally:
            await self._pool.checkin(lease, broken=broken)
        if raised is not None:
            raise raised


class ConnectionBlock(Protocol[C_co]):
    """What `connection(pool, key)` is for a `Pool`: a `with` block."""

    def __enter__(self) -> C_co: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncConnectionBlock(Protocol[C_co]):
    """What `connection(pool, key)` is for an `AsyncPool`: an `async with` block."""

    async def __aenter__(self) -> C_co: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@overload
def connection(
    pool: Pool[K, C], key: K, timeout: float | None = None
) -> ConnectionBlock[C]: ...


@overload
def connection(
    pool: AsyncPool[K, A], key: K, timeout: float | None = None
) -> AsyncConnectionBlock[A]: ...


def connection(pool: Any, key: Any, timeout: float | None = None) -> Any:
    """A block holding one of `key`'s connections: `with connection(pool, key)
    as conn:` for a `Pool`, `async with` for an `AsyncPool`.

    At the end of the block, as psycopg_pool's `pool.connection()`: commit if
    it ended normally (a failed commit is raised, after the checkin), roll
    back if it raised; a connection still in a transaction after that is
    rolled back with a `pool.psycopg.rollback` warning event; a broken or
    closed connection (killed server-side, say) is checked in as broken, so
    the pool closes it and the next lease gets a new one.

    Raises:
        TypeError: `pool` is neither a `Pool` nor an `AsyncPool` (on entry).
        AcquireTimeout, FactoryError, ...: as `pool.checkout`.
    """
    if not isinstance(pool, Pool | AsyncPool):
        raise TypeError(f"connection() needs a Pool or an AsyncPool, got {pool!r}")
    return _Block(pool, key, timeout)
