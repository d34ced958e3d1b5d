"""``demixers export onnx MODEL OUT.onnx``: a demixers model as an ONNX file for onnxruntime.

MODEL is a model folder or Hub id (what ``demixers separate --model`` takes). The file is written
atomically (a temporary name beside OUT, then renamed); an existing OUT is kept unless
``--overwrite``. By default the export is checked: the torch model and onnxruntime separate the
same one-second random mixture and the largest difference must stay within 1e-4 of the output's
scale. ``--quantize int8`` writes the linear layers in int8 instead (checked to load and run only:
its output differs by design). Use the file with ``demixers separate --backend onnx --onnx-model
OUT.onnx`` or ``pipeline(..., backend="onnx", onnx_model="OUT.onnx")``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARITY_TOLERANCE = 1e-4


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="the export format")
    parser.add_argument("model", help="a demixers model folder or Hub id")
    parser.add_argument("output", type=Path, help="the file to write (.onnx)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; at least 17)")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8: dynamic int8 quantization of the linear layers",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the parity check against the torch model"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")


def check_args(args: argparse.Namespace) -> None:
    if args.output.exists() and args.output.is_dir():
        raise IsADirectoryError(f"{args.output}: the output is a file, got a directory")
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists: pass --overwrite to replace it")
    if args.output.suffix.lower() != ".onnx":
        raise ValueError(f"{args.output}: the output file must end in .onnx")
    if args.opset is not None and args.opset < 17:
        raise ValueError(f"--opset {args.opset}: the export needs opset 17 or later")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    import tempfile

    import torch
    from transformers import pipeline

    import demixers

    from ..utils.files import atomic_output
    from .onnx_export import ONNX_OPSET, OnnxSeparator, export_onnx, quantize_onnx_int8

    try:
        separator = pipeline(demixers.PIPELINE_TASK, model=args.model, device="cpu")
    except (OSError, KeyError) as error:
        raise ValueError(f"could not load model {args.model!r}: {str(error).splitlines()[0]}") from None
    model = separator.model.float().eval()
    opset = args.opset if args.opset is not None else ONNX_OPSET
    with tempfile.TemporaryDirectory(prefix="demixers-export-") as folder:
        exported = export_onnx(model, Path(folder) / "model.onnx", opset=opset)
        message = ""
        if args.check:
            runner = OnnxSeparator(model, exported)
            generator = torch.Generator().manual_seed(0)
            length = int(model.config.sampling_rate)
            valid_length = getattr(model, "valid_length", None)
            if getattr(model.config, "use_train_segment", False) and valid_length is not None:
                length = min(length, int(model.config.segment_length))
            mixture = 0.1 * torch.randn(1, model.config.audio_channels, length, generator=generator)
            with torch.inference_mode():
                expected = model(input_values=mixture).audio_values
            actual = runner(mixture)
            difference = float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))
            if not difference <= PARITY_TOLERANCE:
                raise RuntimeError(
                    f"the ONNX export differs from the torch model by {difference:.2e} of the output's "
                    f"scale (limit {PARITY_TOLERANCE:.0e}); not written"
                )
            message = f" (max difference from torch: {difference:.1e} of the output scale)"
        if args.quantize == "int8":
            exported = quantize_onnx_int8(exported, Path(folder) / "model.int8.onnx")
            message = " (int8 linear layers)"
        with atomic_output(args.output, suffix=".onnx.tmp") as temporary:
            Path(temporary).write_bytes(Path(exported).read_bytes())
    if not args.quiet:
        print(f"wrote {args.output}{message}", file=sys.stderr)
    return 0
