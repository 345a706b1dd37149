"""The one exception type for errors a user can cause and fix.

Command-line entry points catch `HarnessError`, print its message as one line on stderr and
exit non-zero; anything else is a bug and keeps its traceback. A library's error that the user
caused (a store that is not there, a model that does not resolve) becomes one the one way:
`user_error`, or `user_errors` around the calls.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class HarnessError(Exception):
    """A problem with the user's input: bad flag, bad data, bad space file, unreachable server."""


class DataError(HarnessError):
    """The dataset cannot be loaded; the message names the offending file or folder."""


def first_line(error: BaseException) -> str:
    """A library error as one line for the user: the first line of its message (MLflow keeps
    it in `.message`, SQLAlchemy wraps the database driver's error in `.orig`), or its type's
    name when it has none."""
    error = getattr(error, "orig", None) or error
    message = (getattr(error, "message", None) or str(error)).strip()
    return message.splitlines()[0] if message else type(error).__name__


def user_error(context: str, error: BaseException) -> HarnessError:
    """`context: <the error's first line>`, to raise `from None` (the traceback is the
    library's, not the user's)."""
    return HarnessError(f"{context}: {first_line(error)}")


@contextmanager
def user_errors(context: str, *errors: type[BaseException]) -> Iterator[None]:
    """Inside, an error of the given types becomes `user_error(context, error)`."""
    try:
        yield
    except errors as error:
        raise user_error(context, error) from None
