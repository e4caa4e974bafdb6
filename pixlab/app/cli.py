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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pixlab: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"pixlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, unreadable device, ...: still the user's environment
        if args.debug:
            raise
        print(f"pixlab: error: {e.strerror or e} ({e.filename or ''})".rstrip(" ()"), file=sys.stderr)
        return 2
