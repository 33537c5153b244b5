"""aio(..., immediate=True): a store operation that never suspends needs no task."""

from __future__ import annotations

import pytest

from barricade.aio import aio
from barricade.state import MemoryStore, StoreError
from barricade.state.metered import MeteredStore


def result_of(d):
    """The result a fired Deferred holds (raises its failure); a Deferred still waiting fails the test."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    value = box[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def test_memory_store_is_immediate_and_metered_says_so():
    assert MemoryStore.immediate is True
    assert MeteredStore(MemoryStore(), None).immediate is True


def test_an_immediate_operation_has_its_result_at_once():
    store = MeteredStore(MemoryStore(clock=lambda: 1000.0), None)
    assert result_of(aio(store.rate("k"), immediate=store.immediate)) == 1
    assert result_of(aio(store.rate("k"), immediate=store.immediate)) == 2
    assert result_of(aio(store.add("c", "v", ttl=10), immediate=True)) is True
    assert result_of(aio(store.get("c"), immediate=True)) == "v"


def test_an_immediate_failure_is_the_deferred_failure():
    class Down(MemoryStore):
        async def rate(self, key, **kw):
            raise StoreError("down")

    store = MeteredStore(Down(), None)
    with pytest.raises(StoreError):
        result_of(aio(store.rate("k"), immediate=store.immediate))
