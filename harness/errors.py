"""The one exception type for errors a user can cause and fix.

Command-line entry points catch `HarnessError`, print its message as one line on stderr and
exit non-zero; anything else is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """A problem with the user's input: bad flag, bad data, bad space file, unreachable server."""


class DataError(HarnessError):
    """The dataset cannot be loaded; the message names the offending file or folder."""


def first_line(error: BaseException) -> str:
    """A library error as one line for the user: the first line of its message (MLflow keeps
    it in `.message`), or its type's name when it has none."""
    message = (getattr(error, "message", None) or str(error)).strip()
    return message.splitlines()[0] if message else type(error).__name__
