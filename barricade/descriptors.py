"""File descriptors as a managed resource: the limit, the count, and who gets one.

A process out of descriptors fails in the worst places: the kernel's
accept queue (Twisted then closes new clients without a word) and the
downstream connect of a session already under way.  So the process
raises its soft limit to the hard one at start-up, and admits a new
session only while every admitted session can still open its downstream
connection with ``descriptor-reserve`` descriptors to spare (Redis, DNS,
scanners, the log, a refusal's own socket).  Each session is counted at
:data:`PER_SESSION` descriptors: the client's socket and one downstream.

``client-max-sessions`` keeps one address from taking every place.

No Twisted here: the server adapter asks :class:`Admission` and acts.
"""

from __future__ import annotations

import errno
import os
import resource

PER_SESSION = 2  # the client's socket and its downstream connection
EXHAUSTED = (errno.EMFILE, errno.ENFILE)


def raise_file_limit() -> tuple[int, int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one: (soft before, soft now, hard).

    An unlimited hard limit is read as the kernel's ``nr_open`` ceiling.
    A limit that cannot be raised is left as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            target = int(open("/proc/sys/fs/nr_open").read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return before, soft, hard


def file_limit() -> int:
    """The soft RLIMIT_NOFILE now (an unlimited one as a large number)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def in_use() -> int | None:
    """Descriptors this process holds now (None where /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
    except OSError:
        return None


def exhausted(exc: BaseException) -> bool:
    """Is ``exc`` a descriptor shortage (EMFILE, ENFILE), as Twisted or the OS reports it?"""
    code = getattr(exc, "errno", None)
    if code is None:
        code = getattr(exc, "osError", None)  # twisted.internet.error.ConnectError
    return code in EXHAUSTED or "Too many open files" in str(exc)


class Admission:
    """Which new connection this process can serve.

    ``capacity`` sessions fit in ``limit`` descriptors once ``base`` (what
    the process held before serving anyone) and ``reserve`` are set aside.
    """

    def __init__(self, limit: int, base: int, reserve: int, per_client: int):
        self.limit = limit
        self.capacity = max(1, (limit - base - reserve) // PER_SESSION)
        self.per_client = per_client
        self.sessions = 0
        self.clients: dict[str, int] = {}

    @property
    def room(self) -> int:
        """Sessions that can still be admitted."""
        return max(0, self.capacity - self.sessions)

    def admit(self, ip: str, exempt: bool = False) -> str | None:
        """Count the session in and return None, or say why not.

        ``"descriptors"``: no room for another session and its downstream;
        ``"per-client"``: ``ip`` holds ``client-max-sessions`` already
        (``exempt``: localhost and route-map RELAY clients are not counted
        against it, as smtpf exempts localhost from concurrency limits).
        """
        if self.sessions >= self.capacity:
            return "descriptors"
        held = self.clients.get(ip, 0)
        if not exempt and self.per_client and held >= self.per_client:
            return "per-client"
        self.sessions += 1
        self.clients[ip] = held + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted session ended."""
        self.sessions = max(0, self.sessions - 1)
        held = self.clients.get(ip, 0) - 1
        if held > 0:
            self.clients[ip] = held
        else:
            self.clients.pop(ip, None)
