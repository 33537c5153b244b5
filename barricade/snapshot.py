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
writes nothing here.
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


def keep_map(source: Path, text: str) -> None:
    """``source`` loaded as ``text``: the copy a later worker falls back on.

    Best effort: a full disk must not turn a good reload into a failed one.
    """
    where = directory()
    if where is None:
        return
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
