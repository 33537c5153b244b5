"""What a replacement worker starts from: the configuration the master started
with, and the last version of each map that loaded.

With ``workers`` > 1 the master replaces a worker that dies, at any time.  Read
from disk, a replacement would see the files as they are at that moment: a
config file edited since start-up (options are read at start only, so one
worker would run another configuration than its siblings), or a map that a
reload refused (the running workers keep its previous contents; the
replacement could not start at all, and with every worker gone clients would
connect and wait for a banner that never comes).

So the master keeps a private directory (``SNAPSHOT_ENV`` names it to every
worker it starts):

* ``barricade.cf``, the text of the config file the master parsed at start,
  which every worker is given instead of the file itself;
* one copy per map, written (atomically) by whichever process last loaded that
  map without a problem.  A worker whose map on disk does not load takes the
  copy, says so in an error line, and keeps watching the file: once it is
  mended, the worker loads it like any other change.

A process without ``SNAPSHOT_ENV`` (``workers=1``, the tools) reads and
writes nothing here.  The master itself loads the maps once, when twistd
checks the options, before its directory can exist (it is made after twistd
drops privileges, so that the workers may write in it): :func:`collect` keeps
those texts in memory until :func:`keep_collected` writes them as the first
copies, instead of a second parse of every map.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

SNAPSHOT_ENV = "BARRICADE_SNAPSHOT"
CONFIG_NAME = "barricade.cf"


def directory() -> Path | None:
    """The master's directory, in a worker it started (else None)."""
    path = os.environ.get(SNAPSHOT_ENV)
    return Path(path) if path else None


def _copy_of(source: Path, where: Path) -> Path:
    """The copy's name: the source's own name (for whoever looks), and a digest of
    its whole path (two maps of one name in different directories)."""
    digest = hashlib.sha256(str(source.absolute()).encode()).hexdigest()[:16]
    return where / f"map-{digest}-{source.name}"


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a worker starting meanwhile reads the old copy or
    the new, never half of one (several workers may write the same map)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: The maps the master loaded before its directory existed (see :func:`collect`).
_collected: dict[Path, str] | None = None


def collect() -> None:
    """From now until :func:`keep_collected`, a map that loads outside a worker
    keeps its text in memory: the master's maps, loaded as twistd checks the options."""
    global _collected
    _collected = {}


def keep_collected(where: Path) -> bool:
    """Write the collected maps' copies into the master's directory ``where``,
    now made, and stop collecting; False when nothing was collected."""
    global _collected
    collected, _collected = _collected, None
    for source, text in (collected or {}).items():
        _keep(where, source, text)
    return bool(collected)


def keep_map(source: Path, text: str) -> None:
    """``source`` loaded as ``text``: the copy a later worker falls back on."""
    where = directory()
    if where is not None:
        _keep(where, source, text)
    elif _collected is not None:
        _collected[source] = text


def _keep(where: Path, source: Path, text: str) -> None:
    """Best effort: a full disk must not turn a good reload into a failed one."""
    try:
        _write(_copy_of(source, where), text)
    except OSError:
        pass


def kept_map(source: Path) -> str | None:
    """The text ``source`` last loaded as, in any worker of this master."""
    where = directory()
    if where is None:
        return None
    try:
        return _copy_of(source, where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def keep_config(where: Path, text: str) -> Path:
    """The config file's text as the master parsed it; its path is what the
    workers are given for ``--config``."""
    path = where / CONFIG_NAME
    _write(path, text)
    return path
