"""Per-file results (content hashes, header facts) cached in SQLite, keyed by path + size + mtime."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_NAME = ".medsweep-cache.sqlite"


def user_cache_dir() -> Path:
    """``$MEDSWEEP_CACHE``, else ``~/.cache/medsweep``."""
    return Path(os.environ.get("MEDSWEEP_CACHE") or Path.home() / ".cache" / "medsweep")


def cache_file(dataset_root: str | Path | None) -> Path:
    """The cache beside the dataset when its folder is writable, else one per dataset in the user cache."""
    if dataset_root is not None:
        root = Path(dataset_root).expanduser().resolve()
        if root.is_dir() and os.access(root, os.W_OK):
            return root / CACHE_NAME
        tag = hashlib.sha1(str(root).encode()).hexdigest()[:12]
        return user_cache_dir() / f"{root.name}-{tag}.sqlite"
    return user_cache_dir() / "files.sqlite"


def file_key(path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``path``, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class FileCache:
    """A table of (path, kind) -> JSON value, valid while the file's size and mtime are unchanged."""

    def __init__(self, location: str | Path):
        self.location = Path(location)
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        self.location.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.location, timeout=60)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT, kind TEXT, size INTEGER, "
            "mtime INTEGER, value TEXT, PRIMARY KEY (path, kind))"
        )
        return connection

    def get(self, kind: str, keys: dict[str, tuple[int, int]]) -> dict[str, dict]:
        """Cached values of ``kind`` for the paths in ``keys`` whose (size, mtime) still match."""
        found: dict[str, dict] = {}
        try:
            with self._connect() as connection:
                rows = connection.execute(
                    "SELECT path, size, mtime, value FROM files WHERE kind = ?", (kind,)
                ).fetchall()
        except sqlite3.Error as exc:
            log.warning("file cache %s unreadable (%s); checking every file", self.location, exc)
            rows = []
        for path, size, mtime, value in rows:
            if keys.get(path) == (size, mtime):
                found[path] = json.loads(value)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put(self, kind: str, items: Iterable[tuple[str, tuple[int, int], dict]]) -> None:
        """Store ``(path, (size, mtime), value)`` entries of ``kind``."""
        rows = [(p, kind, k[0], k[1], json.dumps(v)) for p, k, v in items]
        if not rows:
            return
        try:
            with self._connect() as connection:
                connection.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            log.warning("file cache %s not written (%s)", self.location, exc)
