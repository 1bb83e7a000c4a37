"""What every subcommand shares: exit codes, the command line's own error, library messages in its words."""

from __future__ import annotations

import re

from ..errors import CliError  # noqa: F401  (the subcommands raise it from here)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3  # 3: a bug of ours, not the input


# The library names the keyword argument that would fix a problem (``force=True``); the command line's word for it.
FLAGS = {
    "force": "--force", "arch": "--arch", "fmt": "--from", "src_format": "--from", "dst_format": "--to",
    "allow_nonfinite": "--allow-nonfinite", "keep_dtype": "--keep-dtype", "verify_output": "--no-verify",
    "limit": "--limit", "steps": "--steps", "resume": "--resume", "lr": "--lr", "size": "--size", "batch": "--batch",
    "devices": "--devices", "sync_bn": "--sync-bn",
}
_KEYWORD = re.compile(r"\b(" + "|".join(FLAGS) + r")=([^\s,;:)]*)")


def flags(text: str) -> str:
    """A library message in command-line words: 'pass force=True' -> 'pass --force', 'arch=NAME' -> '--arch NAME'."""
    def flag(m: re.Match) -> str:
        value = m[2]
        return FLAGS[m[1]] if value in ("True", "False", "") else f"{FLAGS[m[1]]} {value}"

    return _KEYWORD.sub(flag, text)
