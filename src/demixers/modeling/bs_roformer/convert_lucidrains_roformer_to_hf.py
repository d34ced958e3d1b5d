"""``demixers convert lucidrains-roformer CONFIG CHECKPOINT OUT``: the ``bs-roformer`` package's layout.

CONFIG is a yaml or json of the ``BSRoformer`` / ``MelBandRoformer`` constructor arguments (bare, or
under ``model:``); see `demixers.modeling.bs_roformer.convert_roformer_to_hf` for the details.
"""

from __future__ import annotations

import argparse

from .convert_roformer_to_hf import _run, configure_parser


def run(args: argparse.Namespace) -> int:
    return _run(args, "lucidrains")


__all__ = ["configure_parser", "run"]
