"""pooler_actors: a keyed pool of reusable resources, built as pykka actors.

Acquire a resource by key from threads ([Pool][pooler_actors.Pool]), asyncio
([AsyncPool][pooler_actors.AsyncPool]) or actors
(`pool_ref.ask(Acquire(key))`); the
[PoolSupervisor][pooler_actors.PoolSupervisor] caps how many exist, queues
callers fairly, checks health and reports every event — to structlog once the
application configured it, else to the stdlib logger `pooler_actors`, which
prints nothing unless `logging` is configured.
"""

from pooler_actors._capacity import GlobalCapacity
from pooler_actors.aio import AsyncPool
from pooler_actors.errors import (
    AcquireTimeout,
    CapacityUnavailable,
    FactoryError,
    PoolClosedError,
    TooManyWaiters,
)
from pooler_actors.lease import Lease
from pooler_actors.messages import (
    Acquire,
    Checkin,
    Checkout,
    Contains,
    GetStats,
    ListResources,
    PoolStopped,
    PopStats,
    Prewarm,
    Refresh,
    Release,
    ReleaseAll,
    Resize,
    Unwatch,
    Watch,
)
from pooler_actors.options import PoolOptions
from pooler_actors.pool import Pool
from pooler_actors.protocols import Factory, Pooler, Reusable
from pooler_actors.stats import Stats
from pooler_actors.supervisor import PoolRef, PoolSupervisor

__all__ = [
    "Acquire",
    "AcquireTimeout",
    "AsyncPool",
    "CapacityUnavailable",
    "Checkin",
    "Checkout",
    "Contains",
    "Factory",
    "FactoryError",
    "GetStats",
    "GlobalCapacity",
    "Lease",
    "ListResources",
    "Pool",
    "PoolClosedError",
    "PoolOptions",
    "PoolRef",
    "PoolStopped",
    "PoolSupervisor",
    "Pooler",
    "PopStats",
    "Prewarm",
    "Refresh",
    "Release",
    "ReleaseAll",
    "Resize",
    "Reusable",
    "Stats",
    "TooManyWaiters",
    "Unwatch",
    "Watch",
]

__version__ = "0.1.0"
