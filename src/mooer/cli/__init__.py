"""The ``mooer`` command: thin argparse front ends over the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser's ``func``
returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

#: subcommand modules, in the order ``mooer --help`` lists them
COMMANDS = ("transcribe", "convert", "eval", "prepare", "train", "pseudo_label", "serve", "stream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mooer",
        description="MooER speech recognition (ASR) and Chinese→English speech translation (AST).",
        epilog="Run 'mooer COMMAND --help' for the options and examples of each command.",
    )
    from mooer import __version__

    parser.add_argument("--version", action="version", version=f"mooer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (library warnings included)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mooer.cli.{name}").add_parser(sub)
    return parser


def quiet_libraries(verbose: bool) -> None:
    """Keep third-party chatter (loading bars, deprecation notes) off the user's terminal."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet_libraries(args.verbose)
    from mooer.errors import MooerError

    try:
        return int(args.func(args) or 0)
    except MooerError as e:
        print(f"mooer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
