"""``vitbench bench``: throughput, step-time split, memory and MFU of vitbench's trainer, measured in the
same run against a plain timm-``train.py``-style loop, plus the speed ablations behind the trainer's
defaults and the planner's speed. See :mod:`vitbench.bench.measure` for the method."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command (for ``vitbench.cli._EXTRA_COMMANDS``)."""
    from vitbench.bench.cli import register as _register

    _register(subparsers)


__all__ = ["register"]
