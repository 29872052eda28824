"""User-facing errors.

A `KeelError` is a problem the user can fix (bad config, bad data, missing
file). It carries one actionable line; the CLI and the component entry points
print that line instead of a traceback. Anything else is a bug and keeps its
traceback.
"""

import contextlib
import sys


class KeelError(Exception):
    """A problem the user can fix; `str(err)` is one actionable line."""


class ConfigError(KeelError):
    """A config value is wrong: the message names the field."""


class DataError(KeelError):
    """The data is unusable: the message names the file, column or row."""


class StorageError(KeelError):
    """An artifact store or source URI cannot be read or written."""


@contextlib.contextmanager
def user_errors(stage: str):
    """Turns a KeelError raised inside a component into one line and exit 2.

    KFP prints a component's stdout; a one-line `keel: error:` is what a user
    should see there, not a traceback through Keel's internals.
    """
    try:
        yield
    except KeelError as err:
        print(f"keel: error: [{stage}] {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
