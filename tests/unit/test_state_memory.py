"""MemoryStore against the shared Store scenarios, plus its own expiry details."""

from __future__ import annotations

import pytest
import pytest_twisted

from barricade.aio import aio
from barricade.state import MemoryStore
from barricade.state.memory import SWEEP_EVERY
from tests.state import SCENARIOS, FakeClock


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest_twisted.ensureDeferred
async def test_scenario(name: str) -> None:
    clock = FakeClock()
    await aio(SCENARIOS[name](MemoryStore(clock), clock))


@pytest_twisted.ensureDeferred
async def test_cache_expires_exactly() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)

    async def scenario() -> None:
        clock.at(0)
        await store.set("k", "v", ttl=10)
        clock.at(9.999)
        assert await store.get("k") == "v"
        assert not await store.add("k", "w", ttl=10)
        clock.at(10)
        assert await store.get("k") is None
        assert await store.add("k", "w", ttl=10)

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_expired_entries_are_swept() -> None:
    """Keys never looked up again do not accumulate (bounded memory)."""
    clock = FakeClock()
    store = MemoryStore(clock)

    async def scenario() -> None:
        for i in range(100):
            await store.rate(f"ip{i}")
        clock.at(120)
        for _ in range(SWEEP_EVERY):
            await store.get("x")

    await aio(scenario())
    assert len(store._data) == 0
