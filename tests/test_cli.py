"""What every subcommand shares: the library's errors are one line and exit 2, a bug is an internal error with its
own exit code (its traceback with --debug), and the usage lists the exit codes."""

from __future__ import annotations

import pytest

from shared.cli import build_parser, main
from shared.cli import summary as summary_command
from shared.cli.base import EXIT_INTERNAL, EXIT_USAGE
from shared.errors import SpecError


def failing(exc: Exception):
    def run(args):
        raise exc

    return run


def test_a_library_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(summary_command, "run", failing(SpecError("unknown architecture 'resnet21'")))
    assert main(["summary", "--arch", "resnet20", "--framework", "torch"]) == EXIT_USAGE == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "resnet-parity summary: error: unknown architecture 'resnet21'\n"


def test_a_file_the_system_refuses_is_bad_input(capsys, monkeypatch):
    monkeypatch.setattr(summary_command, "run", failing(PermissionError(13, "Permission denied", "report.xml")))
    assert main(["summary", "--arch", "resnet20", "--framework", "torch"]) == EXIT_USAGE
    assert "Permission denied" in capsys.readouterr().err


@pytest.mark.parametrize("bug", [KeyError("fc.weight"), ValueError("a bug, not the input"), TypeError("x")])
def test_a_bug_is_an_internal_error_with_its_own_exit_code(capsys, monkeypatch, bug):
    monkeypatch.setattr(summary_command, "run", failing(bug))
    assert main(["summary", "--arch", "resnet20", "--framework", "torch"]) == EXIT_INTERNAL == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("resnet-parity summary: internal error, please report it") and type(bug).__name__ in err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(summary_command, "run", failing(KeyError("fc.weight")))
    with pytest.raises(KeyError, match="fc.weight"):
        main(["--debug", "summary", "--arch", "resnet20", "--framework", "torch"])
    with pytest.raises(SpecError):
        monkeypatch.setattr(summary_command, "run", failing(SpecError("bad")))
        main(["summary", "--debug", "--arch", "resnet20", "--framework", "torch"])


def test_the_usage_lists_the_exit_codes():
    assert "3 internal error" in build_parser().format_help()
