"""SI-SNR / SI-SDR (and their improvements, optionally permutation-invariant) for 🤗 evaluate.

A thin wrapper over `demixers.evaluation.metrics`; load it from its folder::

    import evaluate
    from demixers.evaluation.metric_modules import metric_module_path

    metric = evaluate.load(metric_module_path("si_snr"))
    metric.compute(predictions=[estimate], references=[reference], mixtures=[mixture])
"""

import datasets
import evaluate

from demixers.evaluation.metric_modules import compute_si_snr

_CITATION = """\
@inproceedings{leroux2019sdr,
  title     = {{SDR} -- Half-baked or Well Done?},
  author    = {Le Roux, Jonathan and Wisdom, Scott and Erdogan, Hakan and Hershey, John R.},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  pages     = {626--630},
  year      = {2019}
}
@article{luo2019convtasnet,
  title   = {Conv-{TasNet}: Surpassing Ideal Time--Frequency Magnitude Masking for Speech Separation},
  author  = {Luo, Yi and Mesgarani, Nima},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  volume  = {27},
  number  = {8},
  pages   = {1256--1266},
  year    = {2019}
}
"""

_DESCRIPTION = """\
Scale-invariant signal-to-noise ratio (SI-SNR, the SI-SDR of zero-mean signals) in dB, averaged over
examples, sources and channels. With `mixtures`, the improvement over the unprocessed mixture
(SI-SNRi) is returned as well; with `permutation_invariant=True` the estimated sources of each
example are first matched to the references by the best mean SI-SNR (PIT). `zero_mean=False` gives
SI-SDR (Le Roux et al., 2019) instead.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated signals, one per example: (time,), (sources, time) or (sources, channels, time).
    references: reference signals of the same shapes.
    mixtures: optional mixtures, one per example: (time,) or (channels, time).
    permutation_invariant: match estimates to references per example (default False).
    zero_mean: True for SI-SNR (default), False for SI-SDR.
Returns:
    si_snr (or si_sdr): mean value in dB; si_snri (or si_sdri) with `mixtures`.
Examples:
    >>> metric = evaluate.load(metric_module_path("si_snr"))
    >>> metric.compute(predictions=[[0.1, -0.2, 0.3]], references=[[0.2, -0.4, 0.6]])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SiSnr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float32")),
                        "references": datasets.Sequence(datasets.Value("float32")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(
                            datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                        ),
                        "references": datasets.Sequence(
                            datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                        ),
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/1811.02508", "https://arxiv.org/abs/1809.07454"],
        )

    def _compute(self, predictions, references, mixtures=None, permutation_invariant=False, zero_mean=True):
        return compute_si_snr(
            predictions,
            references,
            mixtures=mixtures,
            permutation_invariant=permutation_invariant,
            zero_mean=zero_mean,
        )
