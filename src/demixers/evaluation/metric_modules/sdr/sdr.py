"""BSS Eval SDR/ISR/SIR/SAR as museval (v4) or mir_eval (v3) computes them, for 🤗 evaluate.

A thin wrapper over `demixers.evaluation.bss_eval`; load it from its folder::

    import evaluate
    from demixers.evaluation.metric_modules import metric_module_path

    metric = evaluate.load(metric_module_path("sdr"))
    metric.compute(predictions=[estimates], references=[references], sampling_rate=44100)
"""

import datasets
import evaluate

from demixers.evaluation.metric_modules import compute_bss_eval

_CITATION = """\
@inproceedings{stoter2018sisec,
  title     = {The 2018 Signal Separation Evaluation Campaign},
  author    = {St{\"o}ter, Fabian-Robert and Liutkus, Antoine and Ito, Nobutaka},
  booktitle = {Latent Variable Analysis and Signal Separation (LVA/ICA)},
  pages     = {293--305},
  year      = {2018}
}
@article{vincent2006performance,
  title   = {Performance Measurement in Blind Audio Source Separation},
  author  = {Vincent, Emmanuel and Gribonval, R{\'e}mi and F{\'e}votte, C{\'e}dric},
  journal = {IEEE Transactions on Audio, Speech, and Language Processing},
  volume  = {14},
  number  = {4},
  pages   = {1462--1469},
  year    = {2006}
}
"""

_DESCRIPTION = """\
BSS Eval metrics in dB. `version="v4"` (default) is museval's framewise bss_eval_images used for
MUSDB18 (SiSEC 2018): 512-tap distortion filters estimated on the whole signal, SDR/ISR/SIR/SAR on
1 s frames. Per example and source the median over frames is taken (frames where a source is silent
are NaN and skipped, as museval does), then the median over examples; the headline value is the
mean over sources. `version="v3"` is mir_eval's bss_eval_sources (SDR/SIR/SAR; pass
`window=math.inf` for whole-signal evaluation).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated sources, one array per example: (sources, channels, time).
    references: reference sources of the same shape.
    sampling_rate: when given, `window` and `hop` are in seconds (default 1 s).
    window, hop: frame length and hop (seconds with `sampling_rate`, else samples; default 44100).
    version: "v4" (museval) or "v3" (mir_eval bss_eval_sources).
Returns:
    sdr, isr (v4), sir, sar: mean over sources of the per-source medians;
    <name>_per_source: the per-source medians (None where every frame was silent).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sdr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(
                        datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                    ),
                    "references": datasets.Sequence(
                        datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                    ),
                }
            ),
            reference_urls=[
                "https://github.com/sigsep/sigsep-mus-eval",
                "https://github.com/craffel/mir_eval",
            ],
        )

    def _compute(self, predictions, references, sampling_rate=None, window=None, hop=None, version="v4"):
        return compute_bss_eval(
            predictions, references, sampling_rate=sampling_rate, window=window, hop=hop, version=version
        )
