"""``resnet-parity``: ResNets in PyTorch, Keras and Flax that compute the same function.

Compare the three frameworks on one architecture (or on your own checkpoint), convert checkpoints
between their file formats with a verified result, print layer shapes, train, and time our models
against each framework's reference.
"""

# The command line only parses, prints and sets the exit code; the library in ``shared`` does the work.

from __future__ import annotations

import argparse
import sys

from .. import frameworks
from ..errors import ResNetParityError, one_line
from ..version import __version__
from . import bench, compare, convert, summary, train
from .base import EXIT_INTERNAL, EXIT_USAGE, flags

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
    parser = argparse.ArgumentParser(
        prog="resnet-parity", description=title.split(": ", 1)[1] + "\n\n" + details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 pass, 1 mismatch (compare, convert), 2 bad input, 3 internal error (a bug: please report it "
               "with what --debug prints). 'resnet-parity COMMAND --help' for more.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ResNetParityError, OSError) as exc:  # the input, or a file the system refuses: the user can fix it
        if args.debug:
            raise
        print(f"resnet-parity {args.command}: error: {flags(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # anything else is a bug of ours
        if args.debug:
            raise
        print(f"resnet-parity {args.command}: internal error, please report it with the traceback --debug prints: "
              f"{type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
