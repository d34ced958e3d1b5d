"""Utterance-level SDR (uSDR, the "global SDR" of the Music/Sound Demixing Challenges) for 🤗 evaluate.

A thin wrapper over `demixers.evaluation.metrics.usdr`; load it from its folder::

    import evaluate
    from demixers.evaluation.metric_modules import metric_module_path

    metric = evaluate.load(metric_module_path("usdr"))
    metric.compute(predictions=[estimates], references=[references])
"""

import datasets
import evaluate

from demixers.evaluation.metric_modules import compute_usdr

_CITATION = """\
@article{mitsufuji2022mdx,
  title   = {Music Demixing Challenge 2021},
  author  = {Mitsufuji, Yuki and Fabbro, Giorgio and Uhlich, Stefan and St{\"o}ter, Fabian-Robert and
             D{\'e}fossez, Alexandre and Kim, Minseok and Choi, Woosung and Yu, Chin-Yun and Cheuk, Kin-Wai},
  journal = {Frontiers in Signal Processing},
  volume  = {1},
  pages   = {808395},
  year    = {2022},
  doi     = {10.3389/frsip.2021.808395}
}
@article{fabbro2024sdx,
  title   = {The Sound Demixing Challenge 2023 -- Music Demixing Track},
  author  = {Fabbro, Giorgio and Uhlich, Stefan and Lai, Chieh-Hsin and Choi, Woosung and
             Mart{\'i}nez-Ram{\'i}rez, Marco and Liao, Weihsiang and Gadelha, Igor and Ramos, Geraldo and
             Hsu, Eddie and Rodrigues, Hugo and St{\"o}ter, Fabian-Robert and D{\'e}fossez, Alexandre and
             Luo, Yi and Yu, Jianwei and Chakraborty, Dipam and Mohanty, Sharada and Solovyev, Roman and
             Stempkovskiy, Alexander and Habruseva, Tatiana and Goswami, Nabarun and Harada, Tatsuya and
             Kim, Minseok and Lee, Jun Hyung and Dong, Yuanliang and Zhang, Xinran and Liu, Jiafeng and
             Mitsufuji, Yuki},
  journal = {Transactions of the International Society for Music Information Retrieval},
  year    = {2024}
}
"""

_DESCRIPTION = """\
Utterance-level SDR in dB: 10·log10((‖s‖² + δ) / (‖s − ŝ‖² + δ)) over each whole example (all
channels and samples), δ = 1e-7, as in the MDX 2021 and SDX 2023 challenges. Per source the mean
over examples; the headline value is the mean over sources.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated sources, one array per example: (sources, channels, time).
    references: reference sources of the same shape.
    delta: the stabilising constant (default 1e-7).
Returns:
    usdr: mean over sources; usdr_per_source: per-source means over examples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Usdr(evaluate.Metric):
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
            reference_urls=["https://arxiv.org/abs/2108.13559", "https://arxiv.org/abs/2308.06979"],
        )

    def _compute(self, predictions, references, delta=1e-7):
        return compute_usdr(predictions, references, delta=delta)
