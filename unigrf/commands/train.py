"""`unigrf train` (not implemented yet; owned by the issue that builds it)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise SystemExit("unigrf train: not implemented yet")
