"""Shared state (grey-listing, rate, concurrency, message limits, caches).

See :mod:`barricade.state.base` for the interface.  ``RedisStore`` is
imported from :mod:`barricade.state.redis` on demand so that the default
in-memory setup does not import redis-py.
"""

from barricade.state.base import Grey, GreyStatus, Store, StoreError
from barricade.state.memory import MemoryStore

__all__ = ["Grey", "GreyStatus", "MemoryStore", "Store", "StoreError"]
