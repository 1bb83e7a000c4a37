"""The library's errors, every one a ``ResNetParityError``. Messages speak in Python API terms (``force=True``, ``arch=NAME``); the command line
translates those to its flags (``shared.cli.flags``), so neither layer needs to know the other's words."""

from __future__ import annotations


class ResNetParityError(Exception):
    """Base class: a problem with the caller's input, stated in one line."""


class SpecError(ResNetParityError, ValueError):
    """An architecture name or spec field that does not exist or has a value outside its closed set."""


class WeightMismatchError(ResNetParityError, ValueError):
    """Weights do not fit the model: lists every missing, unexpected and mis-shaped key."""

    def __init__(self, missing=(), unexpected=(), mismatched=(), context: str = ""):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"weights do not match {context}".rstrip()]
        lines += [f"  missing: {k}" for k in self.missing]
        lines += [f"  unexpected: {k}" for k in self.unexpected]
        lines += [f"  wrong shape: {k}: got {got}, expected {want}" for k, got, want in self.mismatched]
        super().__init__("\n".join(lines))


class ArchitectureError(ResNetParityError, ValueError):
    """Weights that fit no preset, or fit several that compute different things; one line."""


class CheckpointError(ResNetParityError, ValueError):
    """A file that cannot be read or written; the message is one line naming the file."""


class ParityInputError(ResNetParityError, ValueError):
    """An input batch, dtype or setting a parity check cannot run with."""


class FrameworkUnavailable(ResNetParityError, ModuleNotFoundError):
    """A framework (or another optional package) the caller asked for is not installed."""


class DatasetError(ResNetParityError, ValueError):
    """A dataset file is missing, truncated, corrupt or not in the expected format."""


class RecipeError(ResNetParityError, ValueError):
    """A training recipe's setting (schedule, optimizer, dataset name, image size) outside what it allows."""


class BenchInputError(ResNetParityError, ValueError):
    """A batch, size, mode or count the benchmark cannot run with."""


class CliError(ResNetParityError):
    """A problem with the command line itself: printed as one line, exit code 2."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its first non-empty line, or its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(text) > 160 and (end := text.find(". ", 20)) > 0:
        text = text[:end]  # libraries append advice to the first sentence
    return text if len(text) <= 200 else text[:197] + "..."
