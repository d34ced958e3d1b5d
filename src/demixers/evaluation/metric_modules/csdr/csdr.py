"""Chunk-level SDR (cSDR) for 🤗 evaluate: BSS Eval v4 SDR on 1 s chunks, reduced by medians.

A thin wrapper over `demixers.evaluation.metrics.chunk_sdr`; load it from its folder::

    import evaluate
    from demixers.evaluation.metric_modules import metric_module_path

    metric = evaluate.load(metric_module_path("csdr"))
    metric.compute(predictions=[estimates], references=[references], sampling_rate=44100)
"""

import datasets
import evaluate

from demixers.evaluation.metric_modules import compute_csdr

_CITATION = """\
@inproceedings{chen2024dttnet,
  title     = {Music Source Separation Based on a Lightweight Deep Learning Framework
               ({DTTNET}: Dual-Path {TFC-TDF} {UNet})},
  author    = {Chen, Junyu and Vekkot, Susmitha and Shukla, Pancham},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2024}
}
@inproceedings{stoter2018sisec,
  title     = {The 2018 Signal Separation Evaluation Campaign},
  author    = {St{\"o}ter, Fabian-Robert and Liutkus, Antoine and Ito, Nobutaka},
  booktitle = {Latent Variable Analysis and Signal Separation (LVA/ICA)},
  pages     = {293--305},
  year      = {2018}
}
"""

_DESCRIPTION = """\
Chunk-level SDR in dB: the BSS Eval v4 SDR (museval) of every 1 s chunk, NaN on chunks where a
reference or an estimate is silent. With `pooled=True` (default, DTTNet/MDX-Net convention) the
median over all non-silent chunks of all examples, per source; with `pooled=False` the median over
examples of the per-example chunk medians (museval/SiSEC "median of medians"). The headline value
is the mean over sources.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated sources, one array per example: (sources, channels, time).
    references: reference sources of the same shape.
    sampling_rate: sampling rate of the examples (chunks are `chunk_seconds` long; 44100 samples if None).
    chunk_seconds: chunk length in seconds (default 1.0).
    pooled: pool chunks over examples (default True) or take the median of per-example medians.
Returns:
    csdr: mean over sources; csdr_per_source: per-source values (None when every chunk was silent).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Csdr(evaluate.Metric):
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
            reference_urls=["https://arxiv.org/abs/2309.08684", "https://github.com/sigsep/sigsep-mus-eval"],
        )

    def _compute(self, predictions, references, sampling_rate=None, chunk_seconds=1.0, pooled=True):
        return compute_csdr(
            predictions, references, sampling_rate=sampling_rate, chunk_seconds=chunk_seconds, pooled=pooled
        )
