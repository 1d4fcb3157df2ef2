"""`PoolFuture.claim`/`fulfil` and `Replies.claim`: how a checkin on the hit
path settles a queued caller's reply (rule 9 of `pooler_actors._fastpath`)."""

from __future__ import annotations

import threading

import pykka
import pytest

from pooler_actors._future import PoolFuture, Replies


def test_a_claimed_future_cannot_be_withdrawn_and_is_settled_by_its_claimer() -> None:
    future: PoolFuture[str] = PoolFuture()
    assert future.claim()
    assert not future.claim()  # one claimer
    assert not future.pending
    assert not future.withdraw(pykka.Timeout("gave up"))  # too late: it is served
    assert not future.try_set("the core's")  # nor can anyone else settle it
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0)  # not settled yet
    done: list[str] = []
    waiter = threading.Thread(target=lambda: done.append(future.get(timeout=30)))
    waiter.start()
    future.fulfil("lease")
    waiter.join(10)
    assert done == ["lease"]


def test_a_withdrawn_future_is_not_claimed() -> None:
    gone: PoolFuture[str] = PoolFuture()
    assert gone.withdraw(pykka.Timeout("gave up"))
    assert not gone.claim()


def test_a_users_callback_runs_off_the_claimers_thread() -> None:
    """The claimer is a caller's checkin: a callback must not hold it up."""
    watched: PoolFuture[str] = PoolFuture()
    ran: list[str] = []
    done = threading.Event()

    def callback(future: PoolFuture[str]) -> None:
        ran.append(threading.current_thread().name)
        done.set()

    watched.add_done_callback(callback)
    assert watched.claim()
    watched.fulfil("lease")
    assert done.wait(10)
    assert ran == ["pooler_actors-callback"]
    assert watched.get(timeout=0) == "lease"


def test_replies_claim_gives_the_settling_function_or_none() -> None:
    replies = Replies()
    future: PoolFuture[str] = PoolFuture()
    replies[7] = (future, True)
    assert replies.claim(8) is None  # unknown: answered already
    fulfil = replies.claim(7)
    # Claimed and not yet fulfilled, it is claimed again (a checkin
    # interrupted just after its claim finishes its hand-on).
    assert fulfil is not None and replies.claim(7) is not None
    fulfil("lease")
    assert future.get(timeout=0) == "lease"
    assert replies.claim(7) is None  # settled: nobody claims it again
    assert 7 in replies  # forgotten when the core has read the GIVEN note
