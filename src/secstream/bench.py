"""``secstream bench``: placeholder replaced below."""
from __future__ import annotations

import argparse


def run_bench(args: argparse.Namespace) -> int:
    raise SystemExit("bench: not built yet")
