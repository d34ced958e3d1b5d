"""``demixers evaluate``: run a model over a dataset split and score it with the field's metrics.

Each item's mixture goes through the ``audio-source-separation`` pipeline (chunked, at the
model's rate, output at the dataset's rate), the estimates are scored against the references, and
per-item plus aggregated (mean and median per source) results are written to
``OUTPUT_DIR/results.json`` and ``OUTPUT_DIR/results.md``. ``--update-card`` then (re)writes the
model folder's README.md with the results.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TASKS = ("auto", "speech", "music")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        help="model folder, Hub id or official release name (`demixers models`)",
    )
    parser.add_argument(
        "--dataset", "-d", required=True, help="Hub dataset id, prepared folder or raw corpus folder"
    )
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--max-items", type=int, default=None, help="evaluate at most N items")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        help="speech: SI-SNRi/SDRi with permutation matching; music: museval SDR, cSDR, uSDR "
        "(default: speech when the model's sources are permutable speakers)",
    )
    parser.add_argument(
        "--metrics", nargs="+", default=None, help="metric names (default: the task's metrics)"
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="dataset source columns, in the model's source order (default: every source column)",
    )
    parser.add_argument(
        "--output-dir", "-o", default=None, help="where results go (default: ./evaluation-<model name>)"
    )
    parser.add_argument("--segment", type=float, default=None, help="chunk length in seconds")
    parser.add_argument(
        "--overlap", type=float, default=None, help="chunk overlap as a fraction of --segment"
    )
    parser.add_argument("--shifts", type=int, default=None, help="random time-shift augmentations (music)")
    parser.add_argument("--batch-size", type=int, default=None, help="chunks per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --shifts offsets")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument(
        "--streaming", action="store_true", help="stream the dataset instead of downloading it"
    )
    parser.add_argument("--update-card", action="store_true", help="write the results into MODEL/README.md")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def check_args(args: argparse.Namespace) -> None:
    """Option errors, raised (one line, exit 2) right after parsing, before the model is loaded."""
    from ..pipelines.cli import check_chunk_options

    if args.max_items is not None and args.max_items < 1:
        raise ValueError(f"--max-items must be positive, got {args.max_items}")
    check_chunk_options(args.segment, args.overlap, args.batch_size, args.shifts)


def run(args: argparse.Namespace) -> int:
    check_args(args)  # also when called without `demixers.cli.main`
    import numpy as np
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    import demixers

    from ..datasets_scripts import load_separation_dataset
    from ..pipelines.chunking import resolve_chunk_settings
    from ..pipelines.cli import check_device, check_forward_memory, first_line, model_load_errors
    from ..utils.model_contract import is_permutation_invariant
    from .aggregate import results_to_markdown
    from .run import evaluate_separation

    check_device(args.device)
    transformers_logging.disable_progress_bar()  # stderr is for our progress bar and one-line errors
    from ..catalogue.resolve import resolve_model_id

    model_path = resolve_model_id(str(args.model))  # a catalogue alias -> its verified, converted folder
    try:
        separator = pipeline(demixers.PIPELINE_TASK, model=model_path, device=args.device)
    except model_load_errors() as error:
        raise ValueError(f"could not load model {args.model!r}: {first_line(error)}") from None
    config = separator.model.config
    settings = resolve_chunk_settings(
        config,
        segment=args.segment,
        overlap=args.overlap,
        batch_size=args.batch_size,
        shifts=args.shifts,
        seed=args.seed,
    )
    check_forward_memory(config, settings, args.batch_size, args.segment)  # before any allocation
    source_names = list(config.source_names)
    if args.sources is not None and len(args.sources) != len(source_names):
        raise ValueError(
            f"--sources names {len(args.sources)} columns but the model separates {len(source_names)} "
            f"sources ({source_names})"
        )
    task = args.task
    if task == "auto":
        task = "speech" if is_permutation_invariant(config) else "music"

    dataset = load_separation_dataset(
        args.dataset, args.split, streaming=args.streaming, sources=args.sources
    )
    call_options: dict[str, Any] = {
        key: value
        for key, value in {
            "segment": args.segment,
            "overlap": args.overlap,
            "shifts": args.shifts,
            "chunk_batch_size": args.batch_size,
            "seed": args.seed,
        }.items()
        if value is not None
    }

    def separate(mixture: np.ndarray, sampling_rate: int) -> np.ndarray:
        stems = separator(mixture, sampling_rate=sampling_rate, **call_options)
        return np.stack([stem["audio"] for stem in stems])

    output_dir = Path(args.output_dir or f"evaluation-{Path(str(args.model)).name}")
    results = evaluate_separation(
        separate,
        dataset,
        source_names,
        args.metrics,
        task=task,
        max_items=args.max_items,
        output_dir=output_dir,
        metadata={"model": str(args.model), "dataset": str(args.dataset), "split": args.split},
        progress=not args.quiet,
    )
    print(results_to_markdown(results))
    print(f"results written to {output_dir / 'results.json'} and {output_dir / 'results.md'}")
    if args.update_card:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            raise ValueError(f"--update-card needs a local model folder, got {args.model!r}")
        from ..model_cards import write_model_card

        # the renderer puts results['dataset'] into the card metadata when it is a Hub id, not a path
        card = write_model_card(model_dir, results=results)
        print(f"model card updated: {card}")
    return 0
