"""``resnet-parity``: ResNets in PyTorch, Keras and Flax that compute the same function.

Compare the three frameworks on one architecture (or on your own checkpoint), convert checkpoints
between their file formats with a verified result, print layer shapes, train, and time our models
against each framework's reference.
"""

# The command line only parses, prints and sets the exit code; the library in ``shared`` does the work.

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback

from .. import frameworks
from ..errors import ResNetParityError, one_line
from ..version import __version__
from . import bench, compare, convert, summary, train
from .base import EXIT_INTERNAL, EXIT_USAGE, Parser, UsageError, flags

# A reader that went away (`resnet-parity compare --json | head -c 100`): the exit status a shell reports for a
# process that SIGPIPE ended, as `yes | head` does, and nothing printed.
EXIT_PIPE = 128 + signal.SIGPIPE.value if hasattr(signal, "SIGPIPE") else 1
ERROR_SCHEMA_VERSION = 1  # of the JSON error object --json prints on stdout

# subcommand -> (module with add_arguments(parser) and run(args) -> exit code, one-line help)
SUBCOMMANDS = {
    "compare": (compare, "port one framework's weights to the others and compare every block's output"),
    "summary": (summary, "print each top-level layer's output shape"),
    "convert": (convert, "convert a checkpoint file between formats and verify it"),
    "train": (train, "train a ResNet on a local or embedded dataset"),
    "bench": (bench, "img/s of our models against each framework's reference model, side by side"),
}


def version() -> str:
    """'resnet-parity 0.2.0 (torch 2.13.0, ...)': ours and each installed framework's, none of them imported."""
    found = [f"{dist} {v}" for per in frameworks.versions(list(frameworks.FRAMEWORKS)).values()
             for dist, v in per.items() if v != "not installed"]
    return f"resnet-parity {__version__}" + (f" ({', '.join(found)})" if found else "")


def build_parser() -> argparse.ArgumentParser:
    title, _, details = __doc__.strip().partition("\n\n")
    parser = Parser(
        prog="resnet-parity", description=title.split(": ", 1)[1] + "\n\n" + details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 pass, 1 mismatch (compare, convert), 2 bad input, 3 internal error (a bug: please report it "
               f"with what --debug prints), {EXIT_PIPE} the reader of the output went away (a closed pipe). With --json, "
               "an error is also a JSON object on stdout: schema_version, command, exit_code, error. "
               "'resnet-parity COMMAND --help' for more.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (the exit code stays the same)")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks (the exit code stays the same)")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    options = argv[: argv.index("--")] if "--" in argv else argv
    # what a command line that fails to parse asked for
    command, debug, as_json = "", "--debug" in options, "--json" in options
    try:
        args = build_parser().parse_args(argv)
        command, debug, as_json = args.command, args.debug, getattr(args, "json", False)
        code = args.run(args)
        sys.stdout.flush()  # a reader that went away shows here at the latest
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as exc:
        return _fail(exc.prog, exc, EXIT_USAGE, debug=debug, as_json=as_json)
    except (ResNetParityError, OSError) as exc:  # the input, or a file the system refuses: the user can fix it
        return _fail(f"resnet-parity {command}", exc, EXIT_USAGE, debug=debug, as_json=as_json)
    except Exception as exc:  # anything else is a bug of ours
        return _fail(f"resnet-parity {command}", exc, EXIT_INTERNAL, debug=debug, as_json=as_json)


def _fail(prog: str, exc: BaseException, code: int, *, debug: bool, as_json: bool) -> int:
    """One line on stderr (after the traceback with --debug); with --json, the same as a JSON object on stdout."""
    if debug:
        traceback.print_exception(exc)
    if code == EXIT_INTERNAL:
        line = (f"internal error, please report it with the traceback --debug prints: "
                f"{type(exc).__name__}: {one_line(exc)}")
    else:  # the library's message in the command line's words, on one line
        line = "error: " + "; ".join(part.strip() for part in flags(str(exc)).splitlines() if part.strip())
    if as_json:
        error = {"schema_version": ERROR_SCHEMA_VERSION, "command": prog.removeprefix("resnet-parity").strip(),
                 "exit_code": code, "error": line.partition(": ")[2] if code != EXIT_INTERNAL else line,
                 "type": type(exc).__name__}
        try:
            print(json.dumps(error, indent=2), flush=True)
        except BrokenPipeError:
            return _reader_gone()
    print(f"{prog}: {line}", file=sys.stderr)
    return code


def _reader_gone() -> int:
    """The reader of stdout went away: nothing more to say. Point stdout at /dev/null, so the interpreter's last
    flush does not fail again."""
    if sys.stdout is sys.__stdout__ and sys.stdout is not None:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
