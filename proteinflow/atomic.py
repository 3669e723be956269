"""Atomic file writes: write to a temporary file in the target folder, then ``os.replace`` it into place.

A reader never sees a half-written file, and a crash or an exception leaves the previous file (or none)
in place: the temporary file is removed. Every file the library writes goes through this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsync-ed and replaces ``path``.

    The file gets ordinary permissions (0666 & ~umask). On an exception the temporary file is removed and
    ``path`` is left untouched. Raises ``ValueError`` if ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"expected a file path, got the directory {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write a binary file atomically: ``write(handle)`` fills the temporary file (e.g. ``np.savez``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
