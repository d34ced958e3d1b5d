"""Model cards for demixers model folders: README.md with Hub metadata, results and a figure.

* `render_model_card` / `write_model_card`: the card text / write it to ``MODEL_DIR/README.md``;
* `plot_separation` / `render_separation_figure`: spectrograms of a mixture and its stems (PNG);
* ``demixers push MODEL_DIR REPO_ID`` (`demixers.model_cards.cli`): write the card and upload.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import make_lazy

if TYPE_CHECKING:
    from .architectures import ARCHITECTURES, Architecture, architecture_for
    from .figures import plot_separation, render_separation_figure
    from .render import FIGURE_NAME, build_card_data, eval_results_from, render_model_card, write_model_card

# Public names load on first access: `demixers --help` imports this package's cli module.
make_lazy(
    __name__,
    {
        "ARCHITECTURES": ".architectures",
        "Architecture": ".architectures",
        "architecture_for": ".architectures",
        "plot_separation": ".figures",
        "render_separation_figure": ".figures",
        "FIGURE_NAME": ".render",
        "build_card_data": ".render",
        "eval_results_from": ".render",
        "render_model_card": ".render",
        "write_model_card": ".render",
    },
)

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
