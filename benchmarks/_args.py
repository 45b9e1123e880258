"""Benchmark arguments fail as the product's CLI does: one line naming the argument or file, exit code 2.

argparse alone prints its usage before the message, and a wrong path only fails later, deep in a
traceback; here both end in `error: <argument>: <what is wrong>` on stderr and `EXIT_BAD_INPUT`
(`pipeline/errors.py`). Errors the product raises while a benchmark runs it (`PipelineError`, a failed CLI
child) end the same way, with their own exit codes.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILURE, PipelineError

F = TypeVar("F", bound=Callable[..., None])


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(message, EXIT_BAD_INPUT)


def parser(doc: str | None) -> Parser:
    """A parser whose help is the benchmark's module docstring, laid out as written."""
    return Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """End the benchmark with `error: message` on stderr and `code`."""
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    raise SystemExit(code)


def existing_file(text: str) -> Path:
    """argparse type: a path that must be a file (the parser names the argument in its one-line error)."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a path that must be a folder."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def add_peak_size(parser: argparse.ArgumentParser) -> None:
    """`--peak-size`: the square matmul that measures the machine's peak (small in smoke runs: seconds, not 30 s)."""
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the square matmul timed for the peak")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE`: an override every CLI command the benchmark runs receives after its own settings."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every command (e.g. tiny models for a smoke run); it wins over the "
                        "benchmark's own settings")


def reports_errors(main: F) -> F:
    """Turn the product's errors and failed CLI children into one line and their exit code."""
    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            main(*args, **kwargs)
        except PipelineError as exc:
            fail(str(exc), exc.exit_code)
        except subprocess.CalledProcessError as exc:  # the child printed its own error line above
            command = " ".join(str(part) for part in exc.cmd[1:4])
            fail(f"{command} failed with exit code {exc.returncode}", exc.returncode or EXIT_FAILURE)
    return wrapper  # type: ignore[return-value]
