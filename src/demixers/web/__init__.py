"""``demixers web``: a Gradio page to separate audio in the browser (the ``demixers[web]`` extra).

* `demixers.web.core`: the work without the page (model loading, separation to files through the
  CLI's streaming path, zip, waveform/spectrogram images, model cards); no gradio needed.
* `demixers.web.app`: the page (`build_app`, `launch_options`); needs gradio.
* `demixers.web.cli`: ``demixers web [-m MODEL ...] [--host ... --port ... --share]``.

``app.py`` at the repository root serves the same page on a Hugging Face Space.
"""
