"""What every subcommand shares: the library's errors are one line and exit 2, a bug is an internal error with its
own exit code (its traceback with --debug, the code kept), the usage lists the exit codes; every bad input the
issues list, and every numeric flag of every subcommand fuzzed with bad values, is one line and exit 2; with --json
an error is a JSON object on stdout too; a closed pipe is a quiet exit."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import checkpoint
from shared.cli import EXIT_PIPE, build_parser, main
from shared.cli import compare as compare_command
from shared.cli import summary as summary_command
from shared.cli.base import EXIT_INTERNAL, EXIT_USAGE
from shared.errors import SpecError
from shared.spec import get_spec

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


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


def test_debug_shows_the_traceback_and_keeps_the_exit_code(capsys, monkeypatch):
    monkeypatch.setattr(summary_command, "run", failing(KeyError("fc.weight")))
    assert main(["--debug", "summary", "--arch", "resnet20", "--framework", "torch"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "KeyError: 'fc.weight'" in err
    assert err.splitlines()[-1].startswith("resnet-parity summary: internal error")
    monkeypatch.setattr(summary_command, "run", failing(SpecError("bad")))
    assert main(["summary", "--debug", "--arch", "resnet20", "--framework", "torch"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1] == "resnet-parity summary: error: bad"


def test_the_usage_lists_the_exit_codes():
    assert "3 internal error" in build_parser().format_help()


# ----------------------------------------------------------------------------- the contract: one line, exit 2


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_exit_2(code: int, out: str, err: str, *needles: str) -> None:
    assert code == EXIT_USAGE, (code, out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles), (needles, err)


@pytest.mark.parametrize("framework", ["torch", "tf", "jax"])
@pytest.mark.parametrize("flag,value", [("--size", "0"), ("--batch", "-1"), ("--size", "100000")])
def test_summary_refuses_an_empty_or_impossible_input_in_every_framework(capsys, framework, flag, value):
    one_line_exit_2(*run_cli(capsys, "summary", "--arch", "resnet18", "--framework", framework, flag, value), flag)


def test_onnx_is_written_not_read(capsys, tmp_path):
    (tmp_path / "r18.onnx").write_bytes(b"\x08\x07")
    one_line_exit_2(*run_cli(capsys, "convert", str(tmp_path / "r18.onnx"), str(tmp_path / "back.pth")),
                    "r18.onnx: ONNX graph (opset 18) is written, not read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.onnx"]


def test_a_missing_onnx_exporter_says_what_to_install(capsys, tmp_path, impls, monkeypatch):
    from shared.weights import randomize

    checkpoint.save(tmp_path / "r20.safetensors", randomize(get_spec("resnet20")), "resnet20")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails as if it were not installed
    one_line_exit_2(*run_cli(capsys, "convert", str(tmp_path / "r20.safetensors"), str(tmp_path / "r20.onnx")),
                    "writing ONNX needs onnxscript: pip install 'resnet-parity[onnx]'")
    assert not (tmp_path / "r20.onnx").exists()


@pytest.mark.parametrize("argv,needle", [
    (["compare", "--arch", "resnet20", "--size", "0", "--json"], "argument --size"),  # refused by argparse
    (["compare", "--weights", "missing.pth", "--json"], "missing.pth"),  # refused by the library
    (["bench", "--arch", "resnet20", "--json", "--batch", "x"], "argument --batch"),
    (["convert", "a.pth", "b.pth", "--json", "--seed", "-1"], "argument --seed"),
])
def test_with_json_an_error_is_also_a_json_object_on_stdout(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE and err.count("\n") == 1 and needle in err
    error = json.loads(out)
    assert error["schema_version"] == 1 and error["exit_code"] == EXIT_USAGE and error["command"] == argv[0]
    assert needle in error["error"] and err.rstrip().endswith(error["error"])


def test_a_bug_with_json_is_a_json_object_too(capsys, monkeypatch):
    monkeypatch.setattr(compare_command, "run", failing(KeyError("fc.weight")))
    code, out, err = run_cli(capsys, "compare", "--arch", "resnet20", "--json")
    assert code == EXIT_INTERNAL and json.loads(out)["exit_code"] == EXIT_INTERNAL and "KeyError" in err


def test_a_closed_pipe_is_a_quiet_exit():
    """`compare --json | head -c 100`: the reader goes away; no 'Broken pipe', the exit status a shell gives SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "shared.cli", "compare", "--arch", "resnet20", "--frameworks", "torch", "--size", "8",
             "--json"], stdout=write, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV, timeout=300)
    finally:
        os.close(write)
    assert result.stderr == "" and result.returncode == EXIT_PIPE == 141


# Flags where 0 is a value with a meaning: seeds, no training steps (eval mode), no warm-up, no weight decay, no label
# smoothing, a fixed bound of 0 (bit-identical)
ZERO_IS_VALID = {("compare", "--seed"), ("compare", "--train-steps"), ("compare", "--tolerance"), ("convert", "--seed"),
                 ("train", "--seed"), ("train", "--warmup-steps"), ("train", "--weight-decay"),
                 ("train", "--label-smoothing"), ("bench", "--min-round")}
# what each subcommand needs besides the flag under test, so that only the flag can be wrong
BASE = {"compare": ["--arch", "resnet20"], "summary": ["--arch", "resnet20", "--framework", "torch"],
        "convert": ["src.pth", "dst.pth"], "train": ["--framework", "torch"], "bench": ["--arch", "resnet20"]}


def numeric_flags() -> list[tuple[str, str, str]]:
    """(subcommand, flag, 'int' or 'float') for every flag of every subcommand that takes a number."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found = []
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            kind = getattr(action.type, "kind", None) or {int: "int", float: "float"}.get(action.type)
            if kind:
                found.append((command, action.option_strings[0], kind))
    return found


def bad_values(command: str, flag: str, kind: str) -> list[str]:
    values = ["-1", "abc", "1.5x", "", str(2**64) if kind == "int" else "1e999"]
    values += ["nan", "inf", "-inf"] if kind == "float" else ["1.5"]
    return values + ([] if (command, flag) in ZERO_IS_VALID else ["0"])


def test_every_subcommand_has_numeric_flags_the_fuzz_walks():
    assert {c for c, _, _ in numeric_flags()} == set(BASE)
    assert len(numeric_flags()) >= 25


@pytest.mark.parametrize("command,flag,kind", numeric_flags())
def test_fuzz_every_numeric_flag_with_bad_values(capsys, command, flag, kind):
    """Every bad value of every numeric flag: one line naming the flag, exit 2, never a traceback, exit 0 or 3."""
    for value in bad_values(command, flag, kind):
        code, out, err = run_cli(capsys, command, *BASE[command], f"{flag}={value}")
        assert code == EXIT_USAGE, (command, flag, value, code, err)
        assert out == "" and err.count("\n") == 1 and flag in err, (command, flag, value, err)


def test_bad_values_are_refused_before_any_framework_is_imported():
    """The command line checks numbers before it imports a framework: a typo costs no start-up."""
    cases = [[c, *BASE[c], f"{flag}={bad_values(c, flag, kind)[0]}"] for c, flag, kind in numeric_flags()]
    cases += [["summary", "--arch", "resnet18", "--framework", "jax", "--size", "100000"],
              ["compare", "--arch", "resnet18", "--batch", "100000"], ["bench", "--arch", "resnet18", "--size", "100000"]]
    script = ("import sys, json; from shared.cli import main\n"
              f"codes = [main(argv) for argv in {cases!r}]\n"
              "print(json.dumps([codes, sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    codes, imported = json.loads(result.stdout.splitlines()[-1])
    assert set(codes) == {EXIT_USAGE} and imported == []
