"""Serialise the first use of a local SQLite database across processes.

Several workers creating a fresh MLflow or Optuna SQLite database at once can crash in
schema creation; a lock file beside the database makes the first one create it while the
others wait. Server databases (PostgreSQL, MySQL) are left to their own locking.
"""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    if not url.startswith(SQLITE_PREFIX) or url == SQLITE_PREFIX + ":memory:":
        return None
    return Path(url[len(SQLITE_PREFIX) :])


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    path = sqlite_path(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
