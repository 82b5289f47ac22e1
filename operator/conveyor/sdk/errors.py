"""Where an SDK pipeline was written: source locations, and errors that name them (file:line, then the field)."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from conveyor.core.validation import InvalidSpec, Issue

_SDK_DIR = str(Path(__file__).resolve().parent) + os.sep
_CONVEYOR_DIR = str(Path(__file__).resolve().parent.parent) + os.sep
_LIBRARIES = tuple(
    str(Path(p).resolve()) + os.sep
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_path(key))
)


@dataclass(frozen=True, order=True)
class Location:
    """A line of the Python source a pipeline is written in."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{display_path(self.file)}:{self.line}"


def display_path(file: str) -> str:
    """A path as people read it in an error: relative to the working directory when it lies inside it."""
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive
        return file
    return file if relative.startswith("..") else relative


def _in_sdk(filename: str) -> bool:
    return filename.startswith(_SDK_DIR)


def caller() -> Location:
    """The first frame outside this package: the user's line that called into the SDK."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _in_sdk(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:  # called from nowhere (cannot happen from Python code): name the SDK itself
        return Location(_SDK_DIR, 0)
    return Location(str(Path(frame.f_code.co_filename).resolve()), frame.f_lineno)


def user_frame(tb: TracebackType | None) -> Location | None:
    """The deepest traceback entry in user code (outside conveyor, the standard library and installed packages)."""
    found = None
    for entry in traceback.extract_tb(tb):
        filename = str(Path(entry.filename).resolve())
        if filename.startswith((_CONVEYOR_DIR, *_LIBRARIES)) or entry.filename.startswith("<"):
            continue
        found = Location(filename, entry.lineno or 0)
    return found


@dataclass(frozen=True, order=True)
class LocatedIssue:
    """One problem of a pipeline written in Python: the line that says it, the spec field and what is wrong."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.path}: {self.message}" if self.path else f"{self.location}: {self.message}"


class PipelineError(InvalidSpec):
    """A pipeline written in Python with problems, each named by file:line and field; a `conveyor validate`
    InvalidSpec too, so the CLI reports it and exits 2 like any invalid document."""

    def __init__(self, located: Iterable[LocatedIssue]) -> None:
        self.located = sorted(set(located))
        super().__init__(
            [Issue(f"{i.location}: {i.path}" if i.path else str(i.location), i.message) for i in self.located]
        )

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.located)


def fail(location: Location, message: str, path: str = "") -> PipelineError:
    """One located problem, ready to raise."""
    return PipelineError([LocatedIssue(location, path, message)])
