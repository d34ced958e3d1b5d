"""``demixers convert FORMAT SRC OUT``: official checkpoints -> ``save_pretrained`` folders.

Every converter module (one per family, inside the family folder) exposes
``configure_parser(parser)`` and ``run(args) -> int``; they share `demixers.conversion` (checkpoint
reading, key mapping, and an output writer that replaces only the files it writes).
"""

from __future__ import annotations

import argparse

CONVERTERS: dict[str, tuple[str, str]] = {
    "modelscope-mossformer": (
        "demixers.modeling.mossformer.convert_mossformer_original_to_hf",
        "ModelScope's MossFormer release (configuration.json + encoder.bin/decoder.bin/masknet.bin, "
        "or one combined state dict)",
    ),
    "modelscope-mossformer2": (
        "demixers.modeling.mossformer2.convert_mossformer2_original_to_hf",
        "ModelScope's MossFormer2 8 kHz release (configuration.json + pytorch_model.pt, or one state dict)",
    ),
    "clearvoice-mossformer2": (
        "demixers.modeling.mossformer2.convert_mossformer2_clearvoice_to_hf",
        "ClearerVoice-Studio's MossFormer2_SS_16K (last_best_checkpoint + torch file, optional yaml)",
    ),
    "demucs": (
        "demixers.modeling.demucs.convert_demucs_original_to_hf",
        "Demucs v2/v3/v4 releases (bag yaml + safetensors, or legacy .th files)",
    ),
    "asteroid-conv-tasnet": (
        "demixers.modeling.conv_tasnet.convert_conv_tasnet_asteroid_to_hf",
        "asteroid's ConvTasNet checkpoints (a dict with model_args and state_dict)",
    ),
    "demucs-tasnet": (
        "demixers.modeling.conv_tasnet.convert_conv_tasnet_demucs_to_hf",
        "the demucs v2 `tasnet` music release (.th, 4 stereo sources)",
    ),
    "asteroid-dprnn-tasnet": (
        "demixers.modeling.dprnn_tasnet.convert_dprnn_tasnet_asteroid_to_hf",
        "asteroid's DPRNNTasNet checkpoints",
    ),
    "dttnet": (
        "demixers.modeling.dttnet.convert_dttnet_original_to_hf",
        "the official DTTNet Lightning .ckpt (or a plain state dict)",
    ),
    "stacked-hourglass": (
        "demixers.modeling.stacked_hourglass.convert_stacked_hourglass_original_to_hf",
        "the stacked hourglass release's TensorFlow 1 checkpoints (read without TensorFlow)",
    ),
    "msst-roformer": (
        "demixers.modeling.bs_roformer.convert_roformer_to_hf",
        "MSST (Music-Source-Separation-Training) BS-RoFormer / Mel-Band RoFormer (yaml or preset + weights)",
    ),
    "lucidrains-roformer": (
        "demixers.modeling.bs_roformer.convert_lucidrains_roformer_to_hf",
        "the bs-roformer package's BSRoformer / MelBandRoformer state dicts (with their kwargs as yaml/json)",
    ),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """One sub-command per converter; a converter's module (torch, its family) is imported only
    when it is chosen, so ``demixers convert --help`` stays light."""
    from ..cli import LazySubcommandParser, add_lazy_subcommands

    formats = parser.add_subparsers(
        dest="converter", metavar="FORMAT", required=True, parser_class=LazySubcommandParser
    )
    for subparser in add_lazy_subcommands(formats, CONVERTERS, "convert_handler").values():
        _add_push_arguments(subparser)


def _add_push_arguments(parser: argparse.ArgumentParser) -> None:
    hub = parser.add_argument_group("upload")
    hub.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="then upload the converted folder, with its model card and code, to this Hub repo (org/name)",
    )
    hub.add_argument("--private", action="store_true", help="with --push-to-hub: create it private")
    hub.add_argument(
        "--no-code",
        action="store_true",
        help="with --push-to-hub: upload no model/pipeline code (only demixers users can then load it)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen converter; errors of the file formats become one-line ValueErrors (exit 2)."""
    from safetensors import SafetensorError
    from yaml import YAMLError

    repo_id = getattr(args, "push_to_hub", None)
    if repo_id is not None and (repo_id.count("/") > 1 or not repo_id.strip("/")):
        raise ValueError(f"--push-to-hub must look like 'name' or 'org/name', got {repo_id!r}")
    try:
        status = int(args.convert_handler(args) or 0)
    except (SafetensorError, YAMLError) as error:
        # a converter should have named the file already; this is the net for one that did not
        lines = str(error).strip().splitlines()
        raise ValueError(f"{type(error).__name__}: {lines[0] if lines else 'unreadable input'}") from None
    if status != 0 or repo_id is None:
        return status
    from ..trainers.hub import push_model_folder

    folder = getattr(args, "output_dir", None) or args.out
    commit_url = push_model_folder(
        folder,
        repo_id,
        private=args.private,
        commit_message=f"Upload {args.converter} conversion with demixers",
        code=not args.no_code,
    )
    print(f"pushed {folder} to {repo_id}: {commit_url}")
    return 0
