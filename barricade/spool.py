"""The message spool: memory up to a bound, then a temp file in ``save-dir``.

Content scanners that need the whole message (spamd, avastd, fpscand,
clamd ``SCAN``) read it from here at the dot; the forwarder then sends it
downstream.  Scanners that scan by path get a real file with
:meth:`Spool.path` (the spool moves to disk on demand).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import IO

CHUNK = 65536


class Spool:
    def __init__(self, save_dir: str = "/tmp", memory_limit: int = 1 << 20, prefix: str = "barricade-"):
        self.save_dir = save_dir
        self.memory_limit = memory_limit
        self.prefix = prefix
        self.size = 0
        self._memory: bytearray | None = bytearray()
        self._file: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._memory is not None:
            self._memory += data
            if len(self._memory) > self.memory_limit:
                self._to_disk()
            return
        assert self._file is not None
        self._file.write(data)

    def _to_disk(self) -> None:
        if self._file is not None:
            return
        self._file = tempfile.NamedTemporaryFile(prefix=self.prefix, suffix=".tmp", dir=self.save_dir)
        os.chmod(self._file.name, 0o640)  # a scanner daemon in our group may read it
        if self._memory:
            self._file.write(self._memory)
        self._memory = None

    def path(self) -> str:
        """A file holding the whole message, for scanners that read by path."""
        self._to_disk()
        assert self._file is not None
        self._file.flush()
        return self._file.name

    def chunks(self, size: int = CHUNK, start: int = 0) -> Iterator[bytes]:
        """The content from offset ``start``, in pieces of at most ``size``."""
        if self._memory is not None:
            for i in range(start, len(self._memory), size):
                yield bytes(self._memory[i : i + size])
            return
        assert self._file is not None
        self._file.flush()
        with open(self._file.name, "rb") as f:
            f.seek(start)
            while block := f.read(size):
                yield block

    def read(self, limit: int | None = None) -> bytes:
        """The first ``limit`` bytes (all of them when None)."""
        out = bytearray()
        for block in self.chunks():
            out += block
            if limit is not None and len(out) >= limit:
                return bytes(out[:limit])
        return bytes(out)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()  # NamedTemporaryFile deletes itself
            except FileNotFoundError:
                pass  # removed from save-dir behind our back
            self._file = None
        self._memory = bytearray()
        self.size = 0
