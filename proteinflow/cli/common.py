"""Argument types and error reporting shared by the ``proteinflow`` commands.

Every command answers a bad input with one line on stderr, ``proteinflow: error: <what>``, naming the
file or flag and what was expected, and exit status 2 (1 for a failure that is not the user's input,
such as a download that failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a number > 0."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from err
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def optional_int(text: str) -> int | None:
    """``argparse`` type: an integer >= 0, or ``off`` / ``none`` for no bound."""
    if text.lower() in ("none", "off"):
        return None
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'off', got {text!r}") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'off', got {text!r}")
    return value


def optional_fraction(text: str) -> float | None:
    """``argparse`` type: a fraction in [0, 1], or ``off`` / ``none``."""
    if text.lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] or 'off', got {text!r}") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] or 'off', got {text!r}")
    return value


def error(message: str, status: int = 2) -> int:
    """Print ``proteinflow: error: message`` on stderr; returns ``status`` (the exit code)."""
    print(f"proteinflow: error: {message}", file=sys.stderr)
    return status


def output_dir_problem(path: Path, flag: str = "--out") -> str | None:
    """Why ``path`` cannot be used as an output folder (None if it can: absent or a directory)."""
    if path.exists() and not path.is_dir():
        return f"{flag} {path} exists and is not a directory; give a folder path"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{flag} {path}: {parent} is a file, not a directory"
    return None


def existing_file_problem(path: Path, flag: str) -> str | None:
    """Why ``path`` is not a readable file (None if it is)."""
    if not path.exists():
        return f"{flag} {path} does not exist"
    if not path.is_file():
        return f"{flag} {path} is not a file"
    return None
