"""The ``resnet-parity`` command. Each subcommand lives in its own module, imported when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in this package exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "compare": ("compare", "port one framework's weights to the others and compare outputs"),
    "summary": ("summary", "print each top-level layer's output shape"),
    "convert": ("convert", "convert a checkpoint file between formats and verify it"),
    "train": ("train", "train a ResNet on a local or embedded dataset"),
}

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-parity", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        importlib.import_module(f"shared.{module}").add_arguments(p)
        p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage
    try:
        return importlib.import_module(f"shared.{args.module}").run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, OSError, ModuleNotFoundError) as exc:
        if args.debug:
            raise
        print(f"resnet-parity {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
