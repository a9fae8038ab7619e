"""The errors a command reports as the user's: one line and exit status 2. Anything else is a bug and
keeps its traceback. Every type here is torch-free, so the dispatcher names them without the engine."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rosbags.highlevel import AnyReaderError

from ..distributed.cluster import ClusterError
from ..engine.errors import ConfigError
from ..runtime.clouds import CloudError
from ..runtime.messages import MessageError
from ..scoring import ScoringError
from ..tools.errors import BagError, SegmentError


class CommandError(Exception):
    """A user error found by a command itself (its input, a path it was given)."""


class UsageError(CommandError):
    """Flags the command cannot take together or at those values: printed under the command's usage."""


# `emerdiff carla` reports its own (carla/command.py), with the exit statuses carla_rig has.
USER_ERRORS = (CommandError, ConfigError, ScoringError, BagError, SegmentError, MessageError, CloudError,
               AnyReaderError, ClusterError)


@contextmanager
def user_path(path: Path) -> Iterator[None]:
    """An OSError while the command reads or writes a path the user gave is the user's: say which file."""
    try:
        yield
    except OSError as exc:
        raise CommandError(_path_problem(path, exc)) from None


def _path_problem(path: Path, exc: OSError) -> str:
    where = exc.filename or path  # the file inside the given folder, when the OS says which
    text = exc.strerror or str(exc)
    return text if str(where) in text else f"{where}: {text}"
