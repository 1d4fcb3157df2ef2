"""The counter's block path: `with pool.lease(key)` on a shared pool, with no
lease and no note per cycle.

Part of the counter (`_counter`; its state is declared in
`_counter_state._State`): `Counter` inherits these methods, which run under
the counter's one lock as the rest of its callers' side does. A block
inside a shared resource is counted by its id in the resource's `blocks`
list (the counter's state on the record, as `tokens` is), and the block
holds its own place, `(record, id)`: nothing else is made per cycle. The
core reads no note per cycle either: an entry adds one to `entered` (the
acquires, hits and checkouts the core adds at its next read), an exit marks
its resource in `used` (a dict: once however many blocks left it), which
the core reads as an `IN` note of a shared resource without a lease to
count -- last use, idle timer, a retiring or left resource closed once
free, its key's callers served. Only a broken exit leaves a note
(`SPOILT`): the core retires the resource.

The block path's invariant (the counter's invariant 2, for blocks): **a
block's id is in its resource's `blocks` only while the block's place is
set, and its use is in `used` before its id leaves** -- `enter` sets the
place before it appends the id, `leave` marks the use, then takes the id
out, then clears the place. So an interrupt anywhere leaves a place with
nothing counted, or a counted id whose block still knows it: `leave` made
again completes the exit (each of its steps is idempotent), and a block
collected with its place still set (`LeaseBlock.__del__`: an interrupt
kept its `__exit__` from running) is found lost, as a dropped lease is
(`dropped`). A block never holds a resource the core does not see: the
core's one test of a free resource (`_inventory.held`) counts `blocks`.

The path is taken only when nothing needs a lease: a shared pool whose
debug events are off (they name each lease and its hold time), without a
`check`, `reset` or `leak_warning_after` option (`Pool.lease` decides the
options, `enter` the rest); otherwise, and whenever `enter` cannot serve
(the key has no open resource, it retired, callers are queued for it in
the core), `LeaseBlock` checks a lease out as `Pool.checkout` does.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from pooler_actors._counter_state import (
    MISS,
    POLLING,
    QUIET,
    SPOILT,
    WOKEN,
    _State,
    _together,
)
from pooler_actors.lease import Lease

__all__ = ["Block", "Blocks"]


class Block(Protocol):
    """What the block path keeps on a block (`pool.LeaseBlock`): its place,
    `(resource record, id)` while it is inside a resource, else `None`; set
    and cleared by the counter only."""

    place: tuple[Any, int] | None


class Blocks(_State):
    """The counter's block path (see the module docstring); `Counter` adds
    the rest of the callers' side."""

    __slots__ = ()

    def enter(self, key: Hashable, block: Block) -> Any:
        """`with pool.lease(key)` on a shared pool: `key`'s open resource,
        with `block`'s place in it counted, or `MISS` (a lease is checked out
        instead). One step: the place, then the id, then the count (a place
        with no id counted is nothing to undo; `leave` undoes the rest).
        Keeps invariants 2 and 3."""
        ring = False
        try:
            with self.lock:
                if self.debug_on:  # events that name each lease are wanted
                    return MISS
                try:  # (`view` is kept only when resources are shared)
                    res = self.view[key]
                    if res.retired or key in self.waiting:
                        return MISS
                except (KeyError, TypeError):  # not open (or unhashable)
                    return MISS
                # Rung first: an interrupt past it wakes the supervisor for nothing.
                ring = self.noted == QUIET
                if ring:
                    self.noted = WOKEN
                self.lids += 1
                lid = self.lids
                block.place = (res, lid)
                res.blocks[lid] = None
                self.entered += 1
        finally:
            if ring:
                self.wake()
        return res.obj

    def leave(self, block: Block, broken: bool = False, reason: str = "") -> None:
        """The end of `block`'s place (`enter`), at once: its resource marked
        used, its id out, its place cleared; `broken`: a `SPOILT` note too
        (`reason` is why), and the supervisor woken to retire the resource.
        Nothing if the block has no place. Made again after an interrupt, it
        completes the exit. Keeps invariants 2 and 3."""
        # `enter` and `leave` make no call under the lock on their common
        # path, as `Counter.hit` explains: ids go in and out of a dict.
        ring = False
        try:
            with self.lock:
                place = block.place
                if place is None:
                    return
                res, lid = place
                blocks = res.blocks
                if lid in blocks:  # (else taken out already, or its resource gone)
                    # Someone waits on it: a close, a reclaim, callers of its key.
                    urgent = (
                        broken or res.retired or self.starved or res.key in self.waiting
                    )
                    # Rung first: an interrupt past it wakes the supervisor for nothing.
                    ring = self.noted < (WOKEN if urgent else POLLING)
                    if ring:
                        self.noted = WOKEN
                    self.used[res] = None
                    if broken:
                        self._spoil(res, lid, reason)
                    else:
                        del blocks[lid]
                block.place = None
        finally:
            if ring:
                self.wake()

    def _spoil(self, res: Any, lid: int, reason: str) -> None:
        """Block `lid` leaves `res` broken: its `SPOILT` note and its id out,
        at once (interrupted past the note, its id goes all the same)."""
        blocks, note = res.blocks, (SPOILT, res, lid, reason)
        try:
            _together(self.notes.append, note, blocks.pop, lid)
        finally:
            if lid in blocks and self.notes and self.notes[-1] is note:
                del blocks[lid]

    def dropped(self, block: Block) -> None:
        """`block` is collected with its place still set (`LeaseBlock.__del__`:
        an interrupt kept its `__exit__` from running): its place becomes a
        lease of its id, found lost as a dropped lease is (`on_lost`; the
        core's `lost` takes the id out). Takes no lock -- it may run inside
        the pool's locked code -- and reads only what is set before callers
        come, the record's key, object and number, and the block, which
        nobody else holds any more."""
        place, on_lost = block.place, self.on_lost
        if place is None or on_lost is None:
            return
        res, lid = place
        lease: Lease[Any, Any] = Lease(
            res.key,
            res.obj,
            pool=self.pool_id,
            rid=res.rid,
            lid=lid,
            handle=res,
            on_lost=on_lost,
        )
        on_lost(lease)

    def _unhold(self, res: Any, lid: int) -> None:
        """Check in a dropped block's place (`dropped`), found as a lease of
        its id (by `lost`, or after the stop by `checkin`): its use, then its
        id out (nothing if it left already; a lease's id is never there)."""
        if lid in res.blocks:
            self.used[res] = None
            del res.blocks[lid]
