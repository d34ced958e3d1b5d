"""Model cards for demixers model folders: README.md with Hub metadata, results and a figure.

* `render_model_card` / `write_model_card`: the card text / write it to ``MODEL_DIR/README.md``;
* `plot_separation` / `render_separation_figure`: spectrograms of a mixture and its stems (PNG);
* ``demixers push MODEL_DIR REPO_ID`` (`demixers.model_cards.cli`): write the card and upload.
"""

from .architectures import ARCHITECTURES, Architecture, architecture_for
from .figures import plot_separation, render_separation_figure
from .render import FIGURE_NAME, build_card_data, eval_results_from, render_model_card, write_model_card

__all__ = [
    "ARCHITECTURES",
    "FIGURE_NAME",
    "Architecture",
    "architecture_for",
    "build_card_data",
    "eval_results_from",
    "plot_separation",
    "render_model_card",
    "render_separation_figure",
    "write_model_card",
]
