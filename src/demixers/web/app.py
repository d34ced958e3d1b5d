"""The Gradio page of ``demixers web`` (and of ``app.py`` on a Hugging Face Space).

Upload or record a mixture, pick a model (the bundled default, a local folder, a Hub id or any name
the CLI's loader resolves), optionally set segment/overlap/shifts, press *Separate*: the progress
bar follows the chunk engine, then each stem gets a player, a download button and a waveform +
spectrogram image, all stems come as one zip, and the mixture's own image sits above them. The
separation is `demixers.web.core` (the CLI's streaming path); its one-line errors are shown in the
page. The selected model's card is in the side panel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from .core import (
    BUNDLED_CHOICE,
    SEPARATION_SHARE,
    ModelStore,
    ResultFolders,
    WebError,
    bundled_example,
    draw_result,
    error_line,
    example_caption,
    expected_errors,
    model_card,
    resolve_model,
    score_if_example,
    separate_to_folder,
    zip_stems,
)

LOGGER = logging.getLogger(__name__)
# Stem slots in the page: models with more sources show the first ones and ship all in the zip.
MAX_STEMS = 12
TITLE = "demixers: audio source separation"
INTRO = (
    "# demixers: audio source separation\n"
    "Upload or record a mixture, pick a model and press **Separate**: you get one file per source "
    "(speakers, or drums/bass/vocals/other...). The bundled default model is a small demo trained on "
    "synthetic voices; for real recordings type a model folder or a Hub id."
)
CSS = "#status p { font-size: 1.05em; }"


class SeparationApp:
    """The page's state and handlers (`on_separate`, `on_model_change`), testable without a browser."""

    def __init__(
        self,
        models: Sequence[str] = (),
        device: str = "cpu",
        results_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.choices = [BUNDLED_CHOICE, *[model for model in models if model != BUNDLED_CHOICE]]
        self.default_choice = models[0] if models else BUNDLED_CHOICE
        self.store = ModelStore(device)
        self.results = ResultFolders(results_root)

    # -- separate --------------------------------------------------------------------------------

    def separate(
        self,
        audio_path: str | None,
        model_choice: str | None,
        segment: float | None,
        overlap: float | None,
        shifts: float | None,
        progress: Any = None,
    ) -> dict[str, Any]:
        """Everything the page shows after *Separate*, as plain values: ``status`` (markdown),
        ``stems`` ([(label, wav path, image path)]), ``zip``, ``mixture_image``; raises `WebError`
        with the CLI's one-line message for a bad input, option or model."""
        if not audio_path:
            raise WebError("upload or record a mixture first")

        def report(fraction: float, text: str) -> None:
            if progress is not None:
                progress(min(max(fraction, 0.0), 1.0), desc=text)

        shifts_count = None if shifts is None else _whole(shifts, "shifts")
        try:
            model_id = resolve_model(model_choice)
            report(0.0, f"loading {model_choice or BUNDLED_CHOICE}")
            separator = self.store.get(model_id)
            folder = self.results.new()
            result = separate_to_folder(
                separator,
                model_id,
                audio_path,
                folder,
                segment=segment,
                overlap=overlap,
                shifts=shifts_count,
                progress=report,
            )
            report(SEPARATION_SHARE, "drawing the stems")
            draw_result(result, audio_path)
            report(0.95, "zipping the stems")
            result.zip_path = zip_stems(result.stems, result.folder / f"{result.folder.name}_stems.zip")
            score = score_if_example(audio_path, result)
        except WebError:
            raise
        except expected_errors() as error:
            raise WebError(error_line(error, audio_path)) from None
        seconds = result.length / result.sampling_rate
        name = escape_markdown(Path(audio_path).name)
        status = (
            f"Separated **{name}** ({seconds:.1f} s at {result.sampling_rate} Hz) into "
            f"{len(result.stems)} stems with `{model_choice or BUNDLED_CHOICE}`."
        )
        for note in result.notes:
            status += f"\n\nNote: {note}."
        if len(result.stems) > MAX_STEMS:
            status += f" The page shows the first {MAX_STEMS}; the zip holds all {len(result.stems)}."
        if score:
            status += f"\n\n{score}"
        return {
            "status": status,
            "stems": [(stem.label, str(stem.path), str(stem.image)) for stem in result.stems],
            "zip": str(result.zip_path),
            "mixture_image": str(result.mixture_image),
        }

    def on_separate(
        self,
        audio_path: str | None,
        model_choice: str | None,
        segment: float | None,
        overlap: float | None,
        shifts: float | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio injects the bar through this default)
    ) -> list[Any]:
        """The *Separate* button: updates for status, mixture image, zip and every stem slot."""
        try:
            outcome = self.separate(audio_path, model_choice, segment, overlap, shifts, progress)
        except WebError as error:
            return self._updates(f"**Error:** {escape_markdown(str(error))}", None)
        except Exception:  # a bug: logged with its traceback for the server, one line in the page
            LOGGER.exception("demixers web: separation failed")
            return self._updates("**Error:** internal error while separating (see the server log)", None)
        return self._updates(outcome["status"], outcome)

    def _updates(self, status: str, outcome: dict[str, Any] | None) -> list[Any]:
        stems = outcome["stems"] if outcome else []
        updates: list[Any] = [
            gr.update(value=status),
            gr.update(value=outcome["mixture_image"] if outcome else None, visible=bool(outcome)),
            gr.update(value=outcome["zip"] if outcome else None, visible=bool(outcome)),
        ]
        for index in range(MAX_STEMS):
            if index < len(stems):
                label, audio, image = stems[index]
                updates += [
                    gr.update(visible=True),
                    gr.update(value=audio, label=label),
                    gr.update(value=audio, label=f"Download {label}.wav"),
                    gr.update(value=image, label=label),
                ]
            else:
                updates += [
                    gr.update(visible=False),
                    gr.update(value=None),
                    gr.update(value=None),
                    gr.update(value=None),
                ]
        return updates

    # -- model card --------------------------------------------------------------------------------

    def on_model_change(self, model_choice: str | None) -> str:
        """The side panel's markdown for the chosen model (loading it when only its config can tell)."""
        try:
            model_id = resolve_model(model_choice)
            if Path(model_id).is_dir() and (Path(model_id) / "README.md").is_file():
                return model_card(model_id)
            separator = self.store.get(model_id)
            return model_card(model_id, separator.model.config)
        except expected_errors() as error:
            return f"**Could not load this model:** {escape_markdown(error_line(error))}"


def escape_markdown(text: str) -> str:
    """``text`` shown literally in markdown (paths and messages hold ``_``, ``*``, ``<``...)."""
    return "".join(
        f"\\{character}" if character in "\\`*_{}[]<>()#+-.!|~" else character for character in text
    )


def _whole(value: float, name: str) -> int:
    if float(value) != int(value):
        raise WebError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def build_app(
    models: Sequence[str] = (),
    device: str = "cpu",
    results_root: str | os.PathLike[str] | None = None,
) -> gr.Blocks:
    """The page. ``models``: picker entries besides the bundled default (the first is preselected)."""
    app = SeparationApp(models, device, results_root)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        page.separation_app = app  # for tests and embedding
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown(INTRO)
                audio_in = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Mixture (any format soundfile reads: wav, flac, ogg, mp3...)",
                    elem_id="input-audio",
                )
                example = bundled_example()
                if example is not None:
                    mixture, info = example
                    gr.Examples(
                        examples=[[str(mixture)]],
                        inputs=[audio_in],
                        label="Example",
                        example_labels=["bundled 2-speaker mixture"],
                        cache_examples=False,
                        elem_id="example",
                    )
                    gr.Markdown(example_caption(info), elem_id="example-caption")
                model = gr.Dropdown(
                    choices=app.choices,
                    value=app.default_choice,
                    allow_custom_value=True,
                    label="Model",
                    info="the bundled default, a model folder, a Hub id (org/name) or a catalogue name",
                    elem_id="model",
                )
                with gr.Accordion("Advanced", open=False):
                    segment = gr.Number(
                        value=None, label="segment (seconds)", info="chunk length; empty: the model's"
                    )
                    overlap = gr.Number(
                        value=None, label="overlap (fraction in [0, 1))", info="empty: the model's"
                    )
                    shifts = gr.Number(
                        value=0, precision=0, label="shifts", info="random time-shift passes (music models)"
                    )
                run = gr.Button("Separate", variant="primary", elem_id="separate")
                status = gr.Markdown(elem_id="status")
                mixture_image = gr.Image(
                    type="filepath",
                    label="mixture",
                    show_label=False,  # the figure carries its title
                    buttons=["download", "fullscreen"],
                    visible=False,
                    interactive=False,
                    elem_id="mixture-image",
                )
                zip_button = gr.DownloadButton("Download all stems (zip)", visible=False, elem_id="zip")
                slots: list[Any] = []
                for index in range(MAX_STEMS):
                    with gr.Group(visible=False, elem_id=f"stem-{index}") as group:
                        player = gr.Audio(
                            type="filepath",
                            interactive=False,
                            buttons=["download"],
                            elem_id=f"stem-audio-{index}",
                        )
                        download = gr.DownloadButton("Download", elem_id=f"stem-download-{index}")
                        image = gr.Image(
                            type="filepath",
                            interactive=False,
                            show_label=False,
                            buttons=["download", "fullscreen"],
                            elem_id=f"stem-image-{index}",
                        )
                    slots += [group, player, download, image]
            with gr.Column(scale=2), gr.Accordion("Model card", open=True):
                card = gr.Markdown(elem_id="model-card")
        run.click(
            app.on_separate,
            inputs=[audio_in, model, segment, overlap, shifts],
            outputs=[status, mixture_image, zip_button, *slots],
            concurrency_limit=1,  # one separation at a time: it uses every core
        )
        model.change(app.on_model_change, inputs=model, outputs=card)
        page.load(app.on_model_change, inputs=model, outputs=card)
    return page


def launch_options(page: gr.Blocks) -> dict[str, Any]:
    """`gr.Blocks.launch` options every launch of ``page`` needs: the bundled example and the result
    folders may be served, the page's style."""
    from ..bundled import EXAMPLE_DIR

    app: SeparationApp = page.separation_app
    app.results.root.mkdir(parents=True, exist_ok=True)
    return {"allowed_paths": [str(EXAMPLE_DIR), str(app.results.root)], "css": CSS}
