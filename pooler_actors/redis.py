"""A fleet-wide cap on Redis or Valkey (install `pooler_actors[redis]`).

[RedisCapacity][pooler_actors.redis.RedisCapacity] is a
[GlobalCapacity][pooler_actors.GlobalCapacity]: a fair semaphore with leases,
shared by every process that names it, for
`Pool(connect, max_open_resources=20, global_capacity=cap)`.

The key space of one semaphore, all under one hash tag (one hash slot):

| key `{pooler:<name>}:...` | type | holds |
| --- | --- | --- |
| `limit` | string | the limit every process must agree on |
| `holders` | sorted set | held tokens, scored by lease expiry (server clock, ms) |
| `queue` | sorted set | waiting tokens, scored by ticket (FIFO) |
| `waiters` | sorted set | waiting tokens, scored by lease expiry |
| `seq` | string | the last ticket handed out |

Each operation is one Lua script, atomic on the server, that first reads the
server's clock (`TIME`: client clocks never matter), checks the limit, drops
the leases that ended, does its work and grants the head of the queue while
fewer than `limit` tokens hold a slot. Grants are published on
`{pooler:<name>}:granted` so the waiting processes wake up. Every key expires
one `lease_ttl` after the last lease in it, so an idle semaphore leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, cast

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pooler_actors.redis needs redis-py: pip install 'pooler_actors[redis]'"
    ) from exc

from pooler_actors._capacity import OnUnavailable
from pooler_actors.errors import CapacityUnavailable

__all__ = ["CapacityUsage", "RedisCapacity"]

_T = TypeVar("_T")


class _PubSub(Protocol):
    """What this module uses of redis-py's `PubSub`."""

    def subscribe(self, *channels: str) -> object: ...

    def get_message(self, *, timeout: float) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class _Client(Protocol):
    """What this module uses of `redis.Redis`."""

    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any: ...

    def register_script(self, script: str) -> Callable[..., Any]: ...

    def pubsub(self) -> _PubSub: ...

    def close(self) -> None: ...


# The boundary with redis-py, typed here once. Its own annotations change
# between the releases pyproject.toml allows (in 5.0 `from_url`, `Retry` and
# `NoBackoff` have none and `eval` a wrong one, in 5.2 `close` has none, and
# `pubsub` has none before 8.2), and strict mypy would flip with them (an
# untyped call, or an unused `type: ignore`): the module calls redis only
# through these names and protocols.
_from_url = cast("Callable[..., _Client]", redis.Redis.from_url)
_Retry = cast("Callable[[object, int], object]", Retry)
_NoBackoff = cast("Callable[[], object]", NoBackoff)

_MISMATCH = "POOLER_LIMIT_MISMATCH"

# Shared head of every script. KEYS: limit, holders, queue, waiters, seq.
# ARGV: limit, lease ttl (ms), channel, then the script's own arguments.
_PRELUDE = (
    """
local LIMIT, HOLD, QUEUE, WAIT, SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local channel = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local stored = redis.call('GET', LIMIT)
if stored and tonumber(stored) ~= limit then
  return redis.error_reply('"""
    + _MISMATCH
    + """ ' .. stored)
end
if not stored then
  redis.call('SET', LIMIT, limit)
end

local function zrem_all(key, members)
  for i = 1, #members, 500 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 499, #members)))
  end
end

-- Leases that ended free their slot or their place in the queue.
redis.call('ZREMRANGEBYSCORE', HOLD, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', WAIT, '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', WAIT, '-inf', now)
  zrem_all(QUEUE, gone)
end

-- A token asking for a slot: if granted meanwhile its lease is extended,
-- else it keeps its place in the queue (or takes one at the back).
local function refresh(tok)
  if redis.call('ZSCORE', HOLD, tok) then
    redis.call('ZADD', HOLD, now + ttl, tok)
    return
  end
  if redis.call('ZSCORE', QUEUE, tok) == false then
    redis.call('ZADD', QUEUE, redis.call('INCR', SEQ), tok)
  end
  redis.call('ZADD', WAIT, now + ttl, tok)
end

-- Grant the head of the queue while slots are free; tell the fleet.
local function grant()
  local free = limit - redis.call('ZCARD', HOLD)
  if free <= 0 then return end
  local heads = redis.call('ZRANGE', QUEUE, 0, free - 1)
  if #heads == 0 then return end
  for _, tok in ipairs(heads) do
    redis.call('ZADD', HOLD, now + ttl, tok)
  end
  zrem_all(QUEUE, heads)
  zrem_all(WAIT, heads)
  redis.call('PUBLISH', channel, table.concat(heads, ' '))
end

-- Keep the keys one ttl past the last lease in them, then let them go.
local function keep_alive()
  local horizon = now + ttl
  for _, key in ipairs({HOLD, WAIT}) do
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if #last == 2 and tonumber(last[2]) > horizon then
      horizon = tonumber(last[2])
    end
  end
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIREAT', key, horizon + ttl)
  end
end
"""
)

# ARGV[4..]: tokens, oldest first. Returns the given tokens that hold a slot.
_ACQUIRE = (
    _PRELUDE
    + """
for i = 4, #ARGV do
  refresh(ARGV[i])
end
grant()
keep_alive()
local mine = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', HOLD, ARGV[i]) then
    mine[#mine + 1] = ARGV[i]
  end
end
return mine
"""
)

# ARGV[4..]: tokens to forget, held or waiting. Returns how many were known.
_DROP = (
    _PRELUDE
    + """
local toks = {}
for i = 4, #ARGV do toks[#toks + 1] = ARGV[i] end
local known = 0
for _, tok in ipairs(toks) do
  if redis.call('ZSCORE', HOLD, tok) or redis.call('ZSCORE', QUEUE, tok) then
    known = known + 1
  end
end
zrem_all(HOLD, toks)
zrem_all(QUEUE, toks)
zrem_all(WAIT, toks)
grant()
keep_alive()
return known
"""
)

# ARGV[4]: number of held tokens; ARGV[5..]: held, then waiting tokens.
# Returns the held tokens that lost their slot.
_RENEW = (
    _PRELUDE
    + """
local nheld = tonumber(ARGV[4])
local lost = {}
for i = 5, 4 + nheld do
  local tok = ARGV[i]
  -- A lease that ended (data loss, or this process paused) is taken again
  -- while a slot is free: the resource it counts is still open.
  if redis.call('ZSCORE', HOLD, tok) or redis.call('ZCARD', HOLD) < limit then
    redis.call('ZADD', HOLD, now + ttl, tok)
  else
    lost[#lost + 1] = tok
  end
end
for i = 5 + nheld, #ARGV do
  refresh(ARGV[i])
end
grant()
keep_alive()
return lost
"""
)

# Read-only. KEYS: limit, holders, waiters. Returns held, waiting, limit.
_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
local waiting = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
return {held, waiting, redis.call('GET', KEYS[1])}
"""


class CapacityUsage(NamedTuple):
    """What the server counts for one semaphore right now (leases not yet ended)."""

    held: int
    """Slots held across the fleet."""
    waiting: int
    """Reservations queued across the fleet."""
    limit: int | None
    """The fleet's stored limit (`None` while the semaphore is idle)."""


def _check_positive(field: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{field} must be a finite number > 0, not {value!r}")
    return float(value)


class RedisCapacity:
    """A fleet-wide semaphore on Redis or Valkey, with leases and a FIFO queue.

    Every process (and every pool) that uses the same `name` on the same
    server shares one cap of `limit` slots. Give each pool its own
    `RedisCapacity` object; build it anywhere, it connects on first use
    (so building one for an unreachable server works).

    Args:
        url: A redis-py URL, `redis://host:6379/0` (`rediss://` for TLS).
        name: The semaphore's name, shared by the fleet.
        limit: Slots in the whole fleet. Stored on the server by the first
            process; a process configured with another limit gets a
            `ValueError` naming both (change the name, or wait until every
            lease ended, to change the limit).
        lease_ttl: Seconds a slot survives without renewal; renewed every
            third of it. A process that dies gives its slots back within
            `lease_ttl` plus one renewal period.
        on_unavailable: While the server is unreachable, `"closed"` fails
            new creations with
            [CapacityUnavailable][pooler_actors.CapacityUnavailable];
            `"open"` lets them go ahead without a global slot.
        socket_timeout: Seconds any one call may wait for the server: the
            bound on how long a creation waits before failing closed against
            a paused or unreachable server. The client never retries
            (redis-py's default retry with backoff would stretch it).
        socket_connect_timeout: Seconds a connection attempt may take;
            defaults to `socket_timeout`.
        client_options: More keyword arguments for `redis.Redis.from_url`
            (TLS files, `username`, `password`, ...).

    Attributes:
        name: The semaphore's name.
        limit: Slots in the whole fleet.
        lease_ttl: Seconds a lease lasts without renewal.
        on_unavailable: What creations do while the server is unreachable.
        keys: The semaphore's keys on the server (limit, holders, queue,
            waiters, seq).
        channel: The pub/sub channel grants are published on.

    The [GlobalCapacity][pooler_actors.GlobalCapacity] methods are called by
    one pool's capacity thread only; `check` and `usage` may be called from
    any thread.

    Raises:
        ValueError: An argument is out of range (the message names it).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        limit: int,
        lease_ttl: float = 10.0,
        on_unavailable: OnUnavailable = "closed",
        socket_timeout: float = 0.5,
        socket_connect_timeout: float | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a non-empty string, not {url!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        self._ttl_ms = max(1, round(_check_positive("lease_ttl", lease_ttl) * 1000))
        if on_unavailable not in ("closed", "open"):
            raise ValueError(
                f"on_unavailable must be 'closed' or 'open', not {on_unavailable!r}"
            )
        self._socket_timeout = _check_positive("socket_timeout", socket_timeout)
        connect_timeout = (
            self._socket_timeout
            if socket_connect_timeout is None
            else _check_positive("socket_connect_timeout", socket_connect_timeout)
        )
        self.url = url
        self.name: str = name
        self.limit = limit
        self.lease_ttl: float = float(lease_ttl)
        self.on_unavailable: OnUnavailable = on_unavailable
        prefix = f"{{pooler:{name}}}:"
        self.keys = tuple(
            prefix + part for part in ("limit", "holders", "queue", "waiters", "seq")
        )
        self.channel = prefix + "granted"
        self._options: dict[str, Any] = {
            **(client_options or {}),
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": _Retry(_NoBackoff(), 0),
            "retry_on_timeout": False,
        }
        self._client: _Client | None = None
        self._client_lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        self._pubsub: _PubSub | None = None
        self._pubsub_denied = False
        # Waiting tokens a grant message must name to be worth a try.
        self._interest: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"RedisCapacity(name={self.name!r}, limit={self.limit}, "
            f"lease_ttl={self.lease_ttl}, on_unavailable={self.on_unavailable!r})"
        )

    # -- GlobalCapacity -------------------------------------------------------

    def try_acquire(self, waiting: Sequence[str]) -> list[str]:
        """Queue and refresh `waiting`, grant from the head; return the granted.

        Subscribes to the grant channel first (once), so no grant published
        after this call can be missed.
        """
        self._subscribe()
        granted = self._script("acquire", _ACQUIRE, list(waiting))
        mine = [_text(token) for token in granted]
        self._interest = set(waiting).difference(mine)
        return mine

    def cancel(self, tokens: Sequence[str]) -> None:
        """Withdraw waiting tokens (a token granted meanwhile gives its slot back)."""
        self._interest.difference_update(tokens)
        self._script("cancel", _DROP, list(tokens))

    def release(self, tokens: Sequence[str]) -> None:
        """Give back the slots of held tokens; unknown tokens are ignored."""
        self._interest.difference_update(tokens)
        self._script("release", _DROP, list(tokens))

    def renew(self, held: Sequence[str], waiting: Sequence[str]) -> list[str]:
        """Extend every lease in one round trip; return the held tokens lost."""
        lost = self._script("renew", _RENEW, [str(len(held)), *held, *waiting])
        return [_text(token) for token in lost]

    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to `timeout` s for a grant naming one of our waiting tokens.

        Returns `True` also when the subscription broke (a `try_acquire`
        then subscribes again and reads the state); sleeps and returns
        `False` while there is no subscription.
        """
        deadline = time.monotonic() + timeout
        pubsub = self._pubsub
        if pubsub is None:
            time.sleep(max(0.0, timeout))
            return False
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = pubsub.get_message(timeout=max(0.0, remaining))
            except (redis.RedisError, OSError):
                self._drop_pubsub()
                return True
            if message is not None and message.get("type") == "message":
                tokens = _text(message["data"]).split(" ")
                if self._interest.intersection(tokens):
                    return True
            if remaining <= 0:
                return False

    def close(self) -> None:
        """Drop the connections; the next call reconnects."""
        self._drop_pubsub()
        with self._client_lock:
            client, self._client = self._client, None
            self._scripts.clear()
        if client is not None:
            client.close()

    # -- for operators and tests ----------------------------------------------

    def check(self) -> None:
        """Connect now and check the limit against the fleet's (storing it if new).

        Raises:
            ValueError: The fleet's stored limit differs from `limit`.
            CapacityUnavailable: The server could not be reached in time.
        """
        self._script("check", _ACQUIRE, [])

    def usage(self) -> CapacityUsage:
        """Count the slots held and the reservations queued, fleet-wide.

        Raises:
            CapacityUnavailable: The server could not be reached in time.
        """
        keys = [self.keys[0], self.keys[1], self.keys[3]]

        def run() -> Any:
            return self._redis().eval(_USAGE, 3, *keys)

        held, waiting, limit = self._guard("usage", run)
        return CapacityUsage(
            int(held), int(waiting), None if limit is None else int(limit)
        )

    # -- internals -------------------------------------------------------------

    def _redis(self) -> _Client:
        with self._client_lock:  # check/usage may run beside the pool's thread
            if self._client is None:
                self._client = _from_url(self.url, **self._options)
            return self._client

    def _script(self, what: str, source: str, args: list[str]) -> list[Any]:
        def run() -> Any:
            script = self._scripts.get(source)
            if script is None:
                # register_script computes the SHA locally (no round trip);
                # the script loads itself again after a restart (NOSCRIPT).
                script = self._scripts[source] = self._redis().register_script(source)
            return script(
                keys=list(self.keys),
                args=[self.limit, self._ttl_ms, self.channel, *args],
            )

        result = self._guard(what, run)
        return result if isinstance(result, list) else []

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except redis.ResponseError as exc:
            message = str(exc)
            if message.startswith(_MISMATCH):
                stored = message[len(_MISMATCH) :].strip()
                raise ValueError(
                    f"global capacity {self.name!r}: this process has limit="
                    f"{self.limit} but the fleet's stored limit is {stored}; give "
                    "every process the same limit, or a new name (the stored "
                    f"limit {self.keys[0]!r} expires once every lease ended)"
                ) from None
            raise CapacityUnavailable(self.name, f"{what}: {message}") from exc
        except redis.RedisError as exc:
            raise CapacityUnavailable(
                self.name, f"{what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _subscribe(self) -> None:
        """Subscribe to the grant channel and wait for the server to confirm it."""
        if self._pubsub is not None or self._pubsub_denied:
            return
        pubsub = self._redis().pubsub()
        try:
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + self._socket_timeout
            while True:
                message = pubsub.get_message(
                    timeout=max(0.0, deadline - time.monotonic())
                )
                if message is not None and message.get("type") == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError("no confirmation of SUBSCRIBE")
        except redis.ResponseError:
            # Pub/sub refused (an ACL, say): poll instead.
            pubsub.close()
            self._pubsub_denied = True
            return
        except redis.RedisError as exc:
            pubsub.close()
            raise CapacityUnavailable(
                self.name, f"subscribe: {type(exc).__name__}: {exc}"
            ) from exc
        self._pubsub = pubsub

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # The connection is thrown away anyway.
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
