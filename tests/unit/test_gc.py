"""What a worker leaves to Python's garbage collector: only what start-up cannot free.

Ended sessions are freed by reference counting (``test_forwarding``'s
``test_an_ended_session_is_freed_without_the_garbage_collector``); what
start-up made is frozen, out of every collection's walk.
"""

from __future__ import annotations

import gc
import weakref

from barricade.service import freeze_startup


class _Thing:
    pass


def test_startup_objects_are_frozen_and_still_freed_by_reference_counting():
    kept, dropped = _Thing(), _Thing()
    gone = weakref.ref(dropped)
    try:
        freeze_startup()
        assert gc.get_freeze_count() > 1000  # the modules, Twisted, the test run itself
        walked = {id(o) for o in gc.get_objects()}
        assert id(kept) not in walked and id(dropped) not in walked  # no collection looks at them
        del dropped
        assert gone() is None
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0 and any(o is kept for o in gc.get_objects())
