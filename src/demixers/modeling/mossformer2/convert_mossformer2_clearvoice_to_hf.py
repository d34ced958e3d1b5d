"""Convert ClearerVoice-Studio's MossFormer2 speech separation checkpoints into a `save_pretrained` folder.

ClearerVoice's ``alibabasglab/MossFormer2_SS_16K`` checkpoint folder holds a ``last_best_checkpoint``
text file whose first line names the torch file, which stores the weights under the key ``model``
(``enc.*``, ``mask_net.*``, ``dec.*``, possibly prefixed by ``module.`` from distributed training).
The architecture is in ClearerVoice's inference yaml (``config/inference/MossFormer2_SS_16K.yaml``:
``sampling_rate``, ``num_spks``, ``encoder_kernel_size``, ``encoder_embedding_dim``,
``mossformer_sequence_dim``, ``num_mossformer_layer``), read with a safe loader from ``--config``,
from the folder (``config/inference/*.yaml`` or one ``*.yaml``), or absent: then the tensors' shapes
and the ``clearvoice-16k`` preset decide. ClearerVoice's loader silently skips tensors it cannot
place; this converter refuses a checkpoint with missing, unexpected or mis-shaped tensors.

The module names (and so the state dict) are those of ModelScope's m2 release; the mapping is
shared with ``convert_mossformer2_original_to_hf.py``.

Command line: ``demixers convert clearvoice-mossformer2 SRC OUT [--config YAML] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from demixers.conversion import check_output_dir, save_model_folder, source_files

from .convert_mossformer2_original_to_hf import (
    CHECKPOINT_SUFFIXES,
    add_common_arguments,
    build_config,
    build_model,
    load_state_dict_file,
    overrides_from_args,
)

POINTER_FILE = "last_best_checkpoint"
MAX_POINTER_BYTES = 4096
MAX_YAML_BYTES = 1 << 20
# ClearerVoice's yaml fields -> MossFormer2Config fields
_YAML_FIELDS = {
    "sampling_rate": "sampling_rate",
    "encoder_kernel_size": "encoder_kernel_size",
    "encoder_embedding_dim": "encoder_channels",
    "mossformer_sequence_dim": "hidden_size",
    "num_mossformer_layer": "num_hidden_layers",
}


def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """The torch file of a ClearerVoice folder (named by ``last_best_checkpoint``), or ``source`` itself."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if source.is_file():
        if source.name == POINTER_FILE:
            return resolve_checkpoint(source.parent)
        return source
    pointer = source / POINTER_FILE
    if pointer.is_file():
        if pointer.stat().st_size > MAX_POINTER_BYTES:
            raise ValueError(f"{pointer} is {pointer.stat().st_size} bytes; it should name one file")
        try:
            lines = pointer.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"{pointer} is not a text file naming the checkpoint") from None
        name = lines[0].strip() if lines else ""
        if not name:
            raise ValueError(f"{pointer} is empty; its first line should name the checkpoint file")
        checkpoint = (source / name).resolve()
        # the pointer is data from a download: it may only name a file inside the folder
        if Path(name).is_absolute() or not checkpoint.is_relative_to(source.resolve()):
            raise ValueError(f"{pointer} names {name!r}, which is outside {source}; refused")
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{pointer} names {name!r}, but {checkpoint} does not exist")
        return checkpoint
    files = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
    if len(files) != 1:
        raise ValueError(
            f"{source} is not a ClearerVoice checkpoint folder: expected a {POINTER_FILE} file naming the "
            f"checkpoint, or exactly one checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), "
            f"found {[p.name for p in files]}"
        )
    return files[0]


def find_yaml(source: str | os.PathLike) -> Path | None:
    """ClearerVoice's inference yaml shipped with the checkpoint, if there is exactly one."""
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    candidates = sorted((folder / "config" / "inference").glob("*.yaml")) or sorted(folder.glob("*.yaml"))
    ours = [path for path in candidates if "MossFormer2_SS" in path.name]
    candidates = ours or candidates
    if len(candidates) > 1:
        raise ValueError(
            f"{folder} holds several yaml files ({[p.name for p in candidates]}); name one with --config"
        )
    return candidates[0] if candidates else None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A ClearerVoice yaml, read with ``yaml.safe_load`` (no object construction)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes; not a ClearerVoice inference config")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()
        raise ValueError(f"{path} is not valid YAML: {first[0] if first else error}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a mapping of settings (found {type(loaded).__name__})")
    return loaded


def config_from_yaml(settings: Mapping[str, Any], name: str = "the yaml") -> dict[str, Any]:
    """MossFormer2Config kwargs from ClearerVoice's inference settings."""
    network = settings.get("network")
    if network is not None and not str(network).startswith("MossFormer2_SS"):
        raise ValueError(
            f"{name} configures the network {network!r}; this converter reads MossFormer2_SS "
            "(speech separation)"
        )
    kwargs = {ours: settings[theirs] for theirs, ours in _YAML_FIELDS.items() if theirs in settings}
    kernel = kwargs.get("encoder_kernel_size")
    if isinstance(kernel, int) and not isinstance(kernel, bool):
        kwargs["encoder_stride"] = kernel // 2
    if "num_spks" in settings:
        speakers = settings["num_spks"]
        if isinstance(speakers, bool) or not isinstance(speakers, int) or not 1 <= speakers <= 64:
            raise ValueError(f"{name}: num_spks must be an int in [1, 64], got {speakers!r}")
        kwargs["source_names"] = [f"speaker_{index + 1}" for index in range(speakers)]
    channels, hidden = kwargs.get("encoder_channels"), kwargs.get("hidden_size")
    if channels is not None and hidden is not None and channels != hidden:
        raise ValueError(
            f"{name}: encoder_embedding_dim={channels} != mossformer_sequence_dim={hidden}; the reference "
            "decoder only runs when both are equal"
        )
    return kwargs


def convert_clearvoice_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a ClearerVoice MossFormer2_SS checkpoint (folder or file) into a `save_pretrained` folder.

    Raises `ValueError` (listing the keys) when the checkpoint does not match the architecture,
    `FileExistsError` when ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    checkpoint = resolve_checkpoint(source)
    # ClearerVoice's trainer saves {"model": state_dict, ...}; a bare state dict is accepted too
    state_dict = load_state_dict_file(checkpoint, nesting_keys=("model", "state_dict"))
    yaml_path = Path(config_path) if config_path is not None else find_yaml(source)
    from_file = None
    if yaml_path is not None:
        from_file = config_from_yaml(read_yaml(yaml_path), str(yaml_path))
    config = build_config(
        state_dict, from_file, "clearvoice-16k", config_overrides, str(yaml_path or "the yaml")
    )
    model = build_model(state_dict, config, f"the checkpoint {checkpoint}")
    protected = [*source_files(source), checkpoint, *([yaml_path] if yaml_path is not None else [])]
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=protected)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="ClearerVoice checkpoint folder (last_best_checkpoint naming the torch file) or one "
        "checkpoint file",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="ClearerVoice's inference yaml (e.g. config/inference/MossFormer2_SS_16K.yaml); "
        "by default one found beside the checkpoint, else the tensors' shapes and the 16 kHz preset",
    )


def run(args: argparse.Namespace) -> int:
    output_dir = convert_clearvoice_checkpoint(
        args.source,
        args.output_dir,
        config_path=args.config,
        overwrite=args.overwrite,
        config_overrides=overrides_from_args(args),
    )
    print(f"wrote the converted MossFormer2 to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert ClearerVoice-Studio's MossFormer2_SS checkpoints into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
