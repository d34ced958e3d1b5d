"""Package a trained run as the bundled default model: ``python -m demixers.build_default_model``.

The shipped model is made in three reproducible steps (``make default-model`` runs them)::

    demixers prepare synthetic-speech --output data/synthetic_speech            # TTS voices, seed 0
    demixers train --config configs/default_speech_8k.yaml --output-dir runs/default_speech_8k
    python -m demixers.build_default_model --run-dir runs/default_speech_8k \\
        --corpus data/synthetic_speech --recipe configs/default_speech_8k.yaml

This last step

1. copies the run's best checkpoint (``RUN/best``: config, weights, feature extractor config);
2. evaluates it on the corpus's test split (speakers never heard in training) with
   ``demixers evaluate`` → ``results.json``;
3. renders the example mixture from held-back voices with the same generator
   (`make_example_mixture`), separates it, scores it, and draws the spectrogram figure;
4. writes the model card with the evaluation-issue renderer: results, training recipe and cost,
   and a plain statement of what the model is for;
5. swaps the new folders into ``src/demixers/bundled/`` (``default_speech_8k/`` and ``example/``),
   each built under a temporary name and renamed into place.

The weights must stay small enough for the wheel (``--max-megabytes``, 20 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bundled import BUNDLE_DIR, DEFAULT_MODEL_NAME, EXAMPLE_REFERENCES, MODEL_FILES

ABOUT = """\
**What this is.** The small default model bundled inside the `demixers` package, so that
`demixers separate mix.wav` and `pipeline("audio-source-separation")` work offline on a fresh
machine. It was trained with `demixers train` on *synthetic* two-speaker mixtures of Debian
text-to-speech voices (espeak-ng, flite, festival) made by `demixers prepare synthetic-speech`, and
evaluated on voices it never heard in training. It is meant for demos and tests: do not expect it
to separate real recordings well. For real audio, convert an official checkpoint
(`demixers convert modelscope-mossformer ...`, `demixers convert demucs ...`) or pass a Hub model id
with `-m` / `model=`."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demixers.build_default_model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="output folder of `demixers train`")
    parser.add_argument("--corpus", type=Path, required=True, help="the synthetic-speech corpus folder")
    parser.add_argument("--recipe", type=Path, required=True, help="the training recipe (YAML)")
    parser.add_argument("--checkpoint", default="best", help="checkpoint folder inside --run-dir (best)")
    parser.add_argument(
        "--training-wall-seconds", type=float, default=None, help="wall time of the training run"
    )
    parser.add_argument(
        "--training-hardware", default=None, help="what it was trained on (default: this machine)"
    )
    parser.add_argument(
        "--training-stage",
        action="append",
        default=None,
        metavar="TEXT",
        help="one line per training stage for the card, when the run continued an earlier one (repeatable)",
    )
    parser.add_argument("--example-seed", type=int, default=0, help="corpus seed of the example voices")
    parser.add_argument("--example-seconds", type=float, default=10.0, help="length of the example")
    parser.add_argument("--max-megabytes", type=float, default=20.0, help="refuse bigger weights")
    parser.add_argument(
        "--output-dir", type=Path, default=BUNDLE_DIR, help=f"where the bundle goes (default: {BUNDLE_DIR})"
    )
    return parser.parse_args(argv)


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}"


def _write_example(folder: Path, seed: int, seconds: float) -> dict[str, Any]:
    import numpy as np
    import soundfile

    from .datasets_scripts.synthetic_speech import make_example_mixture

    mixture, sources, descriptions = make_example_mixture(seed, seconds)
    # the generator quantises to 16 bits and sums exactly: PCM_16 files hold these values losslessly
    soundfile.write(folder / "mixture.wav", mixture, 8000, subtype="PCM_16")
    for name, source in zip(EXAMPLE_REFERENCES, sources, strict=True):
        soundfile.write(folder / name, source, 8000, subtype="PCM_16")
    stored = soundfile.read(folder / "mixture.wav", dtype="float32")[0]
    if not np.array_equal(stored, mixture.astype(np.float32)):
        raise RuntimeError("the example mixture did not survive 16-bit storage unchanged")
    return {
        "description": "two synthetic text-to-speech voices held back from training: "
        + "; ".join(descriptions),
        "speakers": descriptions,
        "corpus_seed": seed,
        "seconds": round(len(mixture) / 8000, 3),
        "sampling_rate": 8000,
    }


def _score_example(model_dir: Path, example_dir: Path) -> dict[str, float]:
    import numpy as np
    import soundfile
    import torch
    from transformers import pipeline

    import demixers

    from .demo import score_against_references

    separator = pipeline(demixers.PIPELINE_TASK, model=str(model_dir))
    mixture, rate = soundfile.read(example_dir / "mixture.wav", dtype="float32")
    references = np.stack(
        [soundfile.read(example_dir / name, dtype="float32")[0] for name in EXAMPLE_REFERENCES]
    )
    separator({"array": mixture, "sampling_rate": rate})  # warm-up
    threads = torch.get_num_threads()
    start = time.perf_counter()
    stems = separator({"array": mixture, "sampling_rate": rate})
    seconds = time.perf_counter() - start
    estimates = np.stack([np.asarray(stem["audio"]).reshape(-1) for stem in stems])
    mixture_db, stems_db, improvement = score_against_references(references, estimates, mixture)
    return {
        "si_snr_mixture_db": round(mixture_db, 3),
        "si_snr_stems_db": round(stems_db, 3),
        "si_snri_db": round(improvement, 3),
        "separation_seconds": round(seconds, 3),
        "torch_threads": threads,
    }


def build_bundle(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from .cli import main as demixers_main
    from .model_cards import FIGURE_NAME, write_model_card
    from .model_cards.cli import _example_figure
    from .trainers.hub import training_summary

    checkpoint = args.run_dir / args.checkpoint
    missing = [name for name in MODEL_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{checkpoint} lacks {missing}: is --run-dir a finished `demixers train` run?"
        )
    weights_mb = (checkpoint / "model.safetensors").stat().st_size / 1e6
    if weights_mb > args.max_megabytes:
        raise ValueError(
            f"the weights take {weights_mb:.1f} MB, more than --max-megabytes {args.max_megabytes}"
        )
    recipe = yaml.safe_load(args.recipe.read_text())

    args.output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=args.output_dir))
    try:
        model_dir = staging / DEFAULT_MODEL_NAME
        example_dir = staging / "example"
        model_dir.mkdir()
        example_dir.mkdir()
        for name in MODEL_FILES:
            shutil.copy2(checkpoint / name, model_dir / name)

        print(f"[1/4] evaluating {checkpoint} on the test split of {args.corpus}")
        evaluation_dir = staging / "evaluation"
        evaluate = ["evaluate", "--model", str(model_dir), "--dataset", str(args.corpus), "--split", "test"]
        code = demixers_main([*evaluate, "--output-dir", str(evaluation_dir), "--quiet"])
        if code != 0:
            raise RuntimeError(f"demixers evaluate failed with exit code {code}")
        results = json.loads((evaluation_dir / "results.json").read_text())
        # a local path means nothing on another machine: name the corpus by how it is made
        seed, sizes = corpus_description(args.corpus)
        results["dataset"] = f"demixers synthetic-speech (seed {seed})"
        (model_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")

        print(f"[2/4] rendering the example mixture (held-back voices, seed {args.example_seed})")
        example = _write_example(example_dir, args.example_seed, args.example_seconds)
        example.update(_score_example(model_dir, example_dir))
        (example_dir / "example.json").write_text(json.dumps(example, indent=2) + "\n")

        print("[3/4] writing the model card")
        _example_figure(model_dir, example_dir / "mixture.wav", model_dir / FIGURE_NAME)
        # the run's counters (steps, best metric and step) are saved with the last checkpoint
        states = [args.run_dir / "last" / "trainer_state.json", checkpoint / "trainer_state.json"]
        state = next((json.loads(path.read_text()) for path in states if path.is_file()), {})
        summary = training_summary(state, recipe.get("training", {}).get("metric", "si_snri"))
        summary["training data"] = f"demixers prepare synthetic-speech, seed {seed} ({sizes})"
        for index, stage in enumerate(args.training_stage or [], start=1):
            summary[f"training stage {index}"] = stage
        summary["training hardware"] = args.training_hardware or _hardware()
        if args.training_wall_seconds is not None:
            summary["training wall time"] = f"{args.training_wall_seconds / 60:.1f} min"
        summary["weights"] = f"{weights_mb:.2f} MB (float32 safetensors)"
        summary["10 s example separated in"] = (
            f"{example['separation_seconds']:.2f} s ({example['torch_threads']} CPU threads)"
        )
        # a relative corpus path such as data/synthetic_speech reads like a Hub id ("org/name") to
        # the card's metadata: mark it as a local path
        card_recipe = json.loads(json.dumps(recipe))
        dataset = card_recipe.get("data", {}).get("dataset")
        if isinstance(dataset, str) and not dataset.startswith(("/", "./", "../")):
            card_recipe["data"]["dataset"] = f"./{dataset}"
        write_model_card(
            model_dir,
            results=results,
            training_config=card_recipe,
            training_summary=summary,
            figure=model_dir / FIGURE_NAME,
            tags=("synthetic-data", "demo"),
            about=ABOUT,
        )
        (model_dir / "bundle.json").write_text(
            json.dumps(
                {
                    "run_dir": str(args.run_dir),
                    "checkpoint": args.checkpoint,
                    "recipe": str(args.recipe),
                    "corpus": str(args.corpus),
                    "training_summary": summary,
                    "test": results.get("aggregate"),
                    "example": example,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        shutil.rmtree(evaluation_dir)

        print(f"[4/4] installing the bundle into {args.output_dir}")
        for name in (DEFAULT_MODEL_NAME, "example"):
            target = args.output_dir / name
            if target.exists():
                retired = staging / f"{name}.old"
                os.replace(target, retired)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"example": example, "results": results}


def corpus_description(corpus: Path) -> tuple[Any, str]:
    """(seed, "split N mixtures, ...") from the corpus's ``synthetic_speech.json`` manifest."""
    manifest = corpus / "synthetic_speech.json"
    if not manifest.is_file():
        return "unknown", "sizes unknown"
    settings = json.loads(manifest.read_text())
    sizes = ", ".join(f"{split} {count} mixtures" for split, count in settings.get("sizes", {}).items())
    return settings.get("seed", "unknown"), sizes


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    outcome = build_bundle(args)
    example = outcome["example"]
    print(
        f"example: SI-SNRi {example['si_snri_db']:.2f} dB, separated in {example['separation_seconds']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
