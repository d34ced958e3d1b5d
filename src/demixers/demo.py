"""The main job, offline: ``python -m demixers.demo`` (what ``make demo`` runs).

1. takes the example mixture bundled with the package (two synthetic text-to-speech voices that the
   default model never heard in training, made by ``demixers prepare synthetic-speech``);
2. separates it with ``demixers separate`` and the bundled default model (no ``-m``: nothing is
   downloaded);
3. prints where the stems went and their SI-SNR improvement against the bundled reference speakers.

``--mixture`` / ``--references`` / ``--model`` run the same steps on your own files and model. The
bundled model knows synthetic voices only: it shows the machinery working, it is not a separator
for real recordings (convert an official checkpoint for that, see README).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demixers.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default="demo_output", help="where the stems go (default: demo_output)"
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the bundled one)")
    parser.add_argument("--mixture", type=Path, default=None, help="mixture to separate (default: bundled)")
    parser.add_argument(
        "--references", type=Path, nargs="+", default=None, help="reference sources of --mixture, to score"
    )
    return parser.parse_args(argv)


def score_against_references(references: Any, estimates: Any, mixture: Any) -> tuple[float, float, float]:
    """Mean SI-SNR of the mixture and of the estimates (best speaker order), and their difference.

    ``references`` and ``estimates``: ``(sources, time)`` or ``(sources, channels, time)``;
    ``mixture``: ``(time,)`` or ``(channels, time)``. Returns ``(mixture_db, stems_db, si_snri_db)``.
    """
    import numpy as np

    from .evaluation import pit_si_snr, si_snr

    # (sources, channels, time) -> (sources, channels * time): one score per source
    references = np.asarray(references).reshape(len(references), -1)
    estimates = np.asarray(estimates).reshape(len(estimates), -1)
    scores, _ = pit_si_snr(references, estimates)
    baseline = si_snr(references, np.broadcast_to(np.asarray(mixture).reshape(1, -1), references.shape))
    mixture_db, stems_db = float(np.mean(baseline)), float(np.mean(scores))
    return mixture_db, stems_db, stems_db - mixture_db


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if (args.mixture is None) != (args.references is None):
        print("python -m demixers.demo: error: give --mixture and --references together", file=sys.stderr)
        return 2
    import numpy as np
    import soundfile

    from .cli import main as demixers_main

    if args.mixture is None:
        from .bundled import example_mixture

        example = example_mixture()
        mixture_path, reference_paths = example.mixture, list(example.references)
        print(f"[1/3] the bundled example mixture: {mixture_path}")
        if example.info.get("description"):
            print(f"      {example.info['description']}")
    else:
        mixture_path, reference_paths = args.mixture, list(args.references)
        print(f"[1/3] the mixture: {mixture_path}")

    stems_dir = Path(args.output_dir) / "stems"
    model_text = args.model or "the bundled default model"
    print(f"[2/3] separating it with {model_text}")
    separate = ["separate", str(mixture_path), "-o", str(stems_dir), "--overwrite", "-q"]
    if args.model is not None:
        separate += ["-m", args.model]
    code = demixers_main(separate)
    if code != 0:
        return code

    print("[3/3] scoring the stems against the reference speakers")
    mixture, rate = soundfile.read(mixture_path, dtype="float32", always_2d=True)
    references = np.stack(
        [soundfile.read(path, dtype="float32", always_2d=True)[0].T for path in reference_paths]
    )
    stem_paths = sorted((stems_dir / mixture_path.stem).glob("*.wav"))
    estimates = np.stack([soundfile.read(path, dtype="float32", always_2d=True)[0].T for path in stem_paths])
    if estimates.shape != references.shape:
        print(
            f"python -m demixers.demo: error: {len(stem_paths)} stems of shape {estimates.shape[1:]} do not "
            f"match {len(reference_paths)} references of shape {references.shape[1:]}",
            file=sys.stderr,
        )
        return 1
    mixture_db, stems_db, improvement = score_against_references(references, estimates, mixture.T)
    print(f"  stems ({rate} Hz) in {stems_dir / mixture_path.stem}:")
    for path in stem_paths:
        print(f"    {path}")
    print(f"  SI-SNR of the mixture: {mixture_db:.2f} dB; of the stems: {stems_db:.2f} dB")
    print(f"  SI-SNRi (mean over the {len(reference_paths)} speakers): {improvement:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
