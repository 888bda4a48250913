"""Atomic writes: a file appears whole or not at all. A kill, a full disk or an exception mid-write
leaves the old file (or none), never half a new one.

``atomic_write(path, mode)`` gives a file object; ``atomic_path(path)`` a temporary name, for writers
that take a path (safetensors' ``save_file``, ``savefig``, PIL's ``save``, ``to_parquet``). Either
writes beside ``path`` (``os.replace`` is atomic only within one file system) and replaces ``path``
when the block ends without an error; on an error the temporary file is removed.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_path", "atomic_write", "write_text", "write_bytes", "write_json"]


def _temp_name(path: Path) -> Path:
    # hidden and unique per writer (two processes filling one cache never share it); it ends in .tmp, so
    # globs for the real files and push_to_hub skip it, and writers that go by the suffix need a format
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(3).hex()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; it becomes ``path`` at the end.

    The parent folder is created. ``fsync=True`` flushes the file to disk before the rename (for files
    that must survive a power cut, not only a killed process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None, fsync: bool = False) -> Iterator[IO]:
    """``open(path, mode)`` (``"w"`` or ``"wb"``) through a temporary file that replaces ``path`` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode {mode!r}: use 'w' or 'wb'")
    with atomic_path(path, fsync=fsync) as tmp:
        if mode == "wb":
            with open(tmp, "xb") as f:
                yield f
        else:
            with open(tmp, "x", encoding=encoding, newline=newline) as f:
                yield f


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", fsync: bool = False) -> Path:
    with atomic_write(path, "w", encoding=encoding, fsync=fsync) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2, fsync: bool = False, **kwargs) -> Path:
    """``obj`` as JSON (``kwargs`` go to ``json.dumps``: ``default=str``...)."""
    return write_text(path, json.dumps(obj, indent=indent, **kwargs), fsync=fsync)
