"""PerSecond: a text made once per whole second, and again when told to forget."""

from __future__ import annotations

import os

from barricade.per_second import PerSecond
from barricade.protocol.message import _b32, new_session_id


def test_the_text_is_made_once_per_second_and_again_after_forget():
    made: list[int] = []
    text = PerSecond(lambda second: made.append(second) or f"t{second}")
    assert [text(100.1), text(100.9), text(101.0)] == ["t100", "t100", "t101"]
    assert made == [100, 101]
    text.forget()
    assert text(101.5) == "t101" and made == [100, 101, 101]


def test_a_forked_worker_makes_session_ids_with_its_own_pid():
    parent = new_session_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, new_session_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child[7:9] == _b32(pid & 0x3FF, 2)  # the child's pid, not the parent's
    assert parent[7:9] == _b32(os.getpid() & 0x3FF, 2)
