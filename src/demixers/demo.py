"""The main job end to end, offline: ``python -m demixers.demo`` (what ``make demo`` runs).

1. generate a small synthetic two-speaker corpus in the LibriMix layout
   (`demixers.trainers.synthetic`; speakers of the test split are never seen in training);
2. train the tiny MossFormer recipe (``configs/mossformer_tiny_cpu.yaml``) on it with the
   Accelerate trainer, on the CPU, for a few minutes (skipped when a trained model is already there);
3. take a held-out test mixture, separate it with ``demixers separate``;
4. print where the stems went and their SI-SNR improvement against the reference sources.

Nothing is downloaded. The model learns synthetic voices only: it demonstrates the machinery, it
is not a speech separator for real recordings (convert an official checkpoint for that, see README).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_RECIPE = Path("configs/mossformer_tiny_cpu.yaml")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demixers.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default="demo_output", help="where everything goes (default: demo_output)"
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_RECIPE), help=f"training recipe (default: {DEFAULT_RECIPE})"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    parser.add_argument("--retrain", action="store_true", help="train again even if a model exists")
    return parser.parse_args(argv)


def _first_test_item(corpus: Path) -> tuple[Path, list[Path]]:
    metadata = sorted(corpus.glob("Libri2Mix/wav8k/min/metadata/mixture_test_mix_clean.csv"))
    if not metadata:
        raise FileNotFoundError(f"no test metadata under {corpus}")
    with metadata[0].open(newline="") as handle:
        row = next(csv.DictReader(handle))
    base = metadata[0].parent.parent

    def resolve(value: str) -> Path:
        path = Path(value)
        return path if path.is_file() else base / "test" / path.parent.name / path.name

    return resolve(row["mixture_path"]), [resolve(row["source_1_path"]), resolve(row["source_2_path"])]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    import numpy as np
    import soundfile

    from .cli import main as demixers_main
    from .evaluation import pit_si_snr, si_snr
    from .trainers import synthetic

    output_dir = Path(args.output_dir)
    corpus = output_dir / "data"
    run_dir = output_dir / "run"
    model_dir = run_dir / "best"
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"{args.config}: recipe not found (run the demo from the repository root)")

    if not (corpus / "Libri2Mix").is_dir():
        print(f"[1/4] generating a synthetic two-speaker corpus in {corpus}")
        synthetic.main([str(corpus)])
    else:
        print(f"[1/4] using the synthetic corpus in {corpus}")

    if args.retrain or not (model_dir / "config.json").is_file():
        print(f"[2/4] training the tiny MossFormer recipe {args.config} (a few minutes on 2 CPU cores)")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train_args = [
            "train",
            "--config",
            args.config,
            "--output-dir",
            str(run_dir),
            f"--data.dataset={corpus}",
        ]
        if args.epochs is not None:
            train_args.append(f"--training.epochs={args.epochs}")
        if demixers_main(train_args) != 0:
            return 1
    else:
        print(f"[2/4] using the trained model in {model_dir} (pass --retrain to train again)")

    mixture_path, reference_paths = _first_test_item(corpus)
    stems_dir = output_dir / "stems"
    print(f"[3/4] separating the held-out mixture {mixture_path}")
    code = demixers_main(
        ["separate", str(mixture_path), "-m", str(model_dir), "-o", str(stems_dir), "--overwrite", "-q"]
    )
    if code != 0:
        return code

    print("[4/4] scoring the stems against the reference speakers")
    mixture, _ = soundfile.read(mixture_path, dtype="float32")
    references = np.stack([soundfile.read(path, dtype="float32")[0] for path in reference_paths])
    stem_paths = sorted((stems_dir / mixture_path.stem).glob("*.wav"))
    estimates = np.stack([soundfile.read(path, dtype="float32")[0] for path in stem_paths])
    scores, _ = pit_si_snr(references, estimates)
    baseline = si_snr(references, np.broadcast_to(mixture, references.shape))
    improvement = np.asarray(scores) - np.asarray(baseline)
    for path in stem_paths:
        print(f"  {path}")
    print(f"  SI-SNR of the mixture: {np.mean(baseline):.2f} dB; of the stems: {np.mean(scores):.2f} dB")
    print(f"  SI-SNRi (mean over the two speakers): {float(np.mean(improvement)):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
