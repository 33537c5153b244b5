"""The names inside an attachment that is an archive (``deny-compressed-name``).

ZIP is read with the standard library's ``zipfile``, which lists the
central directory without extracting anything.  A password-protected
archive cannot be scanned by anybody downstream either, and a corrupt one
may be an attack on a weaker parser: both are reported, not raised, so the
postmaster's options decide what happens to them.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

MAX_NAMES = 10000  # an archive listing more names than this is taken as corrupt


@dataclass(frozen=True)
class Listing:
    names: tuple[str, ...] = ()
    encrypted: bool = False
    corrupt: str = ""  # why the archive could not be read ("" when it could)


def is_archive(filename: str, content_type: str = "") -> bool:
    """Is this attachment one :func:`list_names` can open?"""
    name = filename.lower()
    return name.endswith(".zip") or content_type in ("application/zip", "application/x-zip-compressed")


def list_names(data: bytes) -> Listing:
    """The member names of a ZIP archive, and whether any is encrypted."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NAMES:
                return Listing(corrupt=f"more than {MAX_NAMES} members")
            names = tuple(i.filename for i in infos)
            encrypted = any(i.flag_bits & 0x1 for i in infos)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, UnicodeDecodeError) as exc:
        return Listing(corrupt=str(exc)[:100] or type(exc).__name__)
    return Listing(names, encrypted)
