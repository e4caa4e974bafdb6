"""Command line: ``pixlab <command> ...`` (same as ``python -m pixlab``).

Each command lives in ``pixlab/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. User errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

COMMANDS = ("train", "predict", "run", "export", "info")

# tifffile logs its own parse errors (e.g. of a truncated TIFF) before pixlab reports them in one
# line; without a handler they would reach stderr through logging's last resort.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

# Exceptions that mean "the user gave us something wrong": one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
               NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    from pixlab import __version__
    p = argparse.ArgumentParser(prog="pixlab", description="Deep-learning pixel classification of microscopy images.")
    p.add_argument("--version", action="version", version=f"pixlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"pixlab.app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pixlab.app.commands.{name}":
                continue
            raise
        mod.add_parser(sub)
    return p


def say(line: str, *, finished: bool = False) -> None:
    """Print one line of pixlab's own (a warning or an error) to stderr, on a line of its own.

    A live tqdm bar ends in carriage-return text without a newline, so a plain print would be glued
    after it; ``tqdm.write`` clears the bars, prints, and redraws them below.

    Parameters
    ----------
    line : str
        The text, without a trailing newline.
    finished : bool
        The command is over (an error or an interrupt): bars it left open (e.g. one held by the
        traceback's frames) are closed first, so they are neither redrawn nor glued to the line.
    """
    from tqdm import tqdm

    if finished:
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
    tqdm.write(line, file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say(f"pixlab: warning: {message}")


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if not args.debug:
        # Warnings are for the user of a command: one line each, without the source line that raised them.
        warnings.formatwarning = lambda message, category, *rest, **kw: f"pixlab: warning: {message}\n"
        warnings.showwarning = _show_warning  # through tqdm: on its own line even while a bar is live
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        say("pixlab: interrupted", finished=True)
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        say(f"pixlab: error: {e}", finished=True)
        return 2
    except OSError as e:  # disk full, unreadable device, ...: still the user's environment
        if args.debug:
            raise
        say(f"pixlab: error: {e.strerror or e} ({e.filename or ''})".rstrip(" ()"), finished=True)
        return 2
