"""A checkpoint to write: a ``Destination`` is checked once (format, existing file, writable directory), its file
written to a temporary path beside it and renamed into place only when committed: nothing is half-written."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from ..errors import CheckpointError, ResNetParityError, one_line
from ..preprocessing import Preprocessing
from ..spec import ResNetSpec
from .formats import FORMATS, Format, detect_format, file_format

STAGING = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}-(.+)")  # .tmp-<pid>-<token>-<destination name>


@dataclass(frozen=True)
class Destination:
    """Where a checkpoint goes, and in which format; ``write`` writes it atomically, ``staged`` leaves the commit
    to the caller (``convert`` verifies the staged file first)."""

    path: Path
    format: Format

    @classmethod
    def open(cls, path: str | os.PathLike, fmt: str | None = None, *, force: bool = False,
             inputs: Mapping[str, str | os.PathLike] | None = None, option: str = "fmt") -> Destination:
        """``path`` in format ``fmt`` (default: by suffix; a new path without one is an Orbax directory); refused,
        before any work, where it is one of ``inputs`` (name -> path), exists (without ``force``) or cannot be
        created (``check_destination``)."""
        path = Path(path)
        found = detect_format(path, fmt, writing=True, option=option)
        check_destination(path, force=force, inputs=inputs)
        return cls(path, found)

    def write(self, weights: Mapping[str, np.ndarray], spec: ResNetSpec, *, consume: bool = False,
              preprocessing: Preprocessing | None = None) -> list[str]:
        """Write ``weights`` atomically: staged beside the destination, then renamed into place; the notes say
        where ``preprocessing`` went (``Staged.write``)."""
        with self.staged() as stage:
            notes = stage.write(weights, spec, consume=consume, preprocessing=preprocessing)
            stage.commit()
        return notes

    @contextlib.contextmanager
    def staged(self) -> Iterator[Staged]:
        """A staging path beside the destination: nothing appears there unless ``commit()`` is called."""
        stage = Staged(self)
        stage.remove_stale()
        try:
            yield stage
        finally:
            if not stage.committed:
                _remove(stage.path)


def check_destination(
    path: Path, *, force: bool, inputs: Mapping[str, str | os.PathLike] | None = None,
    ours: Callable[[Path], bool] | None = None, what: str = "",
) -> None:
    """Refuse, before any work, a destination the caller did not ask to replace: one that is, holds or lies inside
    one of ``inputs`` (name -> path: what the same command reads; refused even with ``force``, which would destroy
    it); one that exists, unless ``force`` or ``ours(path)`` says this tool wrote it for the same purpose (``what``
    describes that file, for the message); one that cannot be created."""
    for name, given in (inputs or {}).items():
        if given is not None and (relation := overlap(path, Path(given))):
            raise CheckpointError(f"{path}: {relation} {name} ({given}), an input of this command; write it elsewhere")
    if path.exists() and not force and not (ours is not None and path.is_file() and ours(path)):
        raise CheckpointError(f"{path}: already exists{f' and is not {what}' if what else ''} "
                              "(pass force=True to overwrite)")
    parent = path.parent
    if not parent.exists():
        raise CheckpointError(f"{path}: cannot write: directory {parent} does not exist")
    if not parent.is_dir():
        raise CheckpointError(f"{path}: cannot write: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: cannot write: permission denied in {parent}")


def overlap(path: Path, other: Path) -> str | None:
    """How writing ``path`` would touch ``other``: 'is' (the same file, a link to it too), 'lies inside' (a file
    of a directory ``other`` that exists: a new file beside it touches nothing), 'holds' (a directory it would
    replace); None if it would not."""
    a, b = path.resolve(), other.resolve()
    if a == b or (path.exists() and other.exists() and os.path.samefile(path, other)):
        return "is"
    if b in a.parents and path.exists():
        return "lies inside"
    if a in b.parents:
        return "holds"
    return None


class Staged:
    """A temporary path beside the destination; ``commit`` renames it into place, else it is removed.

    The name carries the writing process's id, so a later write to the same destination can remove
    what a killed one left behind (``remove_stale``).
    """

    def __init__(self, destination: Destination):
        self.destination = destination
        self.dst = destination.path
        # same directory (so the rename is atomic), same name at the end (so suffix rules still apply)
        self.path = self.dst.parent / f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{self.dst.name}"
        self.committed = False

    def write(self, weights: Mapping[str, np.ndarray], spec: ResNetSpec, *, consume: bool = False,
              preprocessing: Preprocessing | None = None) -> list[str]:
        """Write the destination's format here; failures are one CheckpointError line naming the destination.
        ``preprocessing`` goes where the format has a place for it; the notes say where, or why not.

        With ``consume``, the writer may empty ``weights`` (a dict no one else needs) as it converts them:
        where the framework keeps its own copy in another layout, that halves the memory a write takes.
        """
        fmt = self.destination.format
        if spec.headless and not fmt.headless:
            able = ", ".join(name for name, f in FORMATS.items() if f.headless and f.writable)
            raise CheckpointError(f"{self.dst}: {fmt.label} is written with its classifier, and {spec.name} is a headless "
                                  f"backbone (num_classes=0) without one; write it as one of {able}")
        keep = {"preprocessing": preprocessing} if fmt.keeps_preprocessing and preprocessing is not None else {}
        try:
            notes = file_format(fmt).write_weights(self.path, weights, spec, fmt.name, consume=consume, **keep) or []
        except CheckpointError as exc:
            if str(self.path) not in str(exc):
                raise
            raise CheckpointError(str(exc).replace(str(self.path), str(self.dst))) from exc  # the file the caller named
        except ResNetParityError:  # a missing package (say, ONNX's exporter), in its own words
            raise
        except Exception as exc:
            raise CheckpointError(f"{self.dst}: cannot write {fmt.label}: {one_line(exc)}") from exc
        if preprocessing is not None and not fmt.keeps_preprocessing:
            notes = [f"{fmt.label} has no place for preprocessing: prepare inputs as {preprocessing.name} does"]
        return [note.replace(self.path.name, self.dst.name) for note in notes]

    def remove_stale(self) -> list[Path]:
        """Remove this destination's staging paths whose writer no longer runs; returns them."""
        stale = []
        for entry in self.dst.parent.iterdir():
            found = STAGING.fullmatch(entry.name)
            if found and found[2] == self.dst.name and not _running(int(found[1])):
                _remove(entry)
                stale.append(entry)
        return stale

    def commit(self) -> None:
        if not self.path.exists():
            raise CheckpointError(f"{self.dst}: the writer produced no output")
        honour_umask(self.path)
        if self.dst.is_dir() or (self.dst.exists() and self.path.is_dir()):
            # a directory cannot be replaced in one rename: move the old one aside first
            old = self.dst.parent / f".old-{secrets.token_hex(4)}-{self.dst.name}"
            os.rename(self.dst, old)
            os.rename(self.path, self.dst)
            _remove(old)
        else:
            os.replace(self.path, self.dst)
        self.committed = True


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` at ``path``, staged beside it and renamed into place: a reader never sees half a file."""
    stage = path.parent / f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}"
    try:
        stage.write_bytes(data)
        honour_umask(stage)
        os.replace(stage, path)
    finally:
        _remove(stage)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def honour_umask(path: Path) -> None:
    """Give what a writer created the permissions the user's umask asks for (some libraries write 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for entry in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
