"""How jaxqa speaks to its user: one error family, one log channel.

Every error a user can cause (a bad flag, file, key or input) derives from
`Error`; its message names the flag, file or key at fault, and the command-line
tools print it as one line and exit with status 2.

Every file jaxqa writes is written whole or not at all (`write_file`, and
`jaxqa.checkpoint.atomic_folder` for folders).

Progress and notes go through the `logging` loggers under "jaxqa"
(`logging.getLogger("jaxqa.<module>")`); a command-line tool shows them with
`log_to`, a program of your own with its usual logging set-up.
"""

import contextlib
import logging
import os
from pathlib import Path


class Error(ValueError):
    """Something jaxqa cannot do with what it was given; the message says what and where."""


class _Lines(logging.Formatter):
    """A record as one bare line; a warning or worse says its level first."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return line if record.levelno < logging.WARNING else f"{record.levelname}: {line}"


@contextlib.contextmanager
def log_to(stream, level: int = logging.INFO):
    """Within the block, shows jaxqa's log lines of `level` and above on `stream`
    (and only there), as bare lines (warnings begin "WARNING: "); the logging
    set-up is restored after it."""
    logger = logging.getLogger("jaxqa")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Lines("%(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def write_file(path: str | Path, contents: str | bytes) -> Path:
    """Writes `contents` (text as UTF-8) to `path` whole or not at all (a
    temporary file beside it, renamed into place), so that a failure leaves any
    earlier file as it was; a full disk or another OS failure is an `Error`
    naming the path."""
    if Path(path).name == "":  # '', '.', '/': no file to write
        raise Error(f"{str(path)!r}: not a file name")
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(contents.encode() if isinstance(contents, str) else contents)
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # a read-only disk refuses the clean-up too
            temporary.unlink(missing_ok=True)
        raise Error(f"{path}: cannot write the file ({err.strerror})") from None
    return path
