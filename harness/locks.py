"""Serialise the first use of a store across processes and machines.

Several workers creating a fresh MLflow or Optuna database at once can crash in schema
creation (SQLite: "table already exists"; PostgreSQL: a unique violation in its catalog). The
first one creates it while the others wait:

- a local SQLite database: a lock file beside it (`flock`, so the lock goes with a killed
  process);
- a PostgreSQL database: a session-level advisory lock in that database (released when the
  connection ends, so it too goes with a killed worker);
- anything else (MySQL, files, servers): no lock.

The lock is re-entrant within a thread: code that holds it may call code that takes it (e.g.
failing stale trials, whose callback takes it too).
"""

import fcntl
import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError, user_error

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+")
# pg_advisory_lock's key: any constant 64-bit number that other software is unlikely to use
ADVISORY_LOCK_KEY = 0x6861726E657373  # "harness"
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = 600

_held = threading.local()  # the URLs whose lock this thread holds


def sqlite_path(url: str) -> Path | None:
    if not url.startswith(SQLITE_PREFIX) or url == SQLITE_PREFIX + ":memory:":
        return None
    return Path(url[len(SQLITE_PREFIX) :])


def with_installed_driver(url: str) -> str:
    """`postgresql://...` with the PostgreSQL driver this project installs (psycopg2).

    SQLAlchemy 2.1 maps a bare `postgresql://` URL to psycopg 3, which is not a dependency;
    an explicit driver (`postgresql+psycopg://`, `postgresql+psycopg2://`) is kept as given.
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def redacted(url: str) -> str:
    """The URL as it may be shown in an error message: without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


@contextmanager
def creation_lock(url: str, what: str = "database") -> Iterator[None]:
    """Hold the store's creation lock; `what` names the store in error messages."""
    held = _held.__dict__.setdefault("urls", set())
    if url in held:
        yield
        return
    held.add(url)
    try:
        with _lock(url, what):
            yield
    finally:
        held.discard(url)


@contextmanager
def _lock(url: str, what: str) -> Iterator[None]:
    if url.startswith(POSTGRES_SCHEMES):
        with _advisory_lock(url, what):
            yield
        return
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


@contextmanager
def _advisory_lock(url: str, what: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = None
    try:
        engine = sqlalchemy.create_engine(
            with_installed_driver(url),
            poolclass=NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
        connection = engine.connect()
    except ImportError as error:
        raise user_error(f"cannot use {what} {redacted(url)!r}", error) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        if engine is not None:
            engine.dispose()
        raise user_error(f"cannot open {what} {redacted(url)!r}", error) from None
    try:
        # a worker whose machine vanished holds the lock until PostgreSQL notices: wait long
        # enough for any summary, not for ever
        connection.execute(sqlalchemy.text(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'"))
        lock = sqlalchemy.text("SELECT pg_advisory_lock(:key)")
        try:
            connection.execute(lock, {"key": ADVISORY_LOCK_KEY})
        except sqlalchemy.exc.OperationalError:
            raise HarnessError(
                f"{what} {redacted(url)!r}: another worker held its lock for {LOCK_TIMEOUT_S} s"
            ) from None
        connection.commit()
        yield
    finally:
        connection.close()  # ends the session, and with it the lock
        engine.dispose()
