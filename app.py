"""The web demo as a Hugging Face Space (``sdk: gradio``, ``app_file: app.py``) or a local script.

Spaces run ``python app.py``; locally ``python app.py`` (or ``demixers web``) serves the same page on
http://127.0.0.1:7860. ``DEMIXERS_WEB_MODELS`` (comma-separated model folders, Hub ids or catalogue
names) adds models to the picker, the first preselected; ``DEMIXERS_WEB_DEVICE`` picks where they run
(default cpu). Gradio's usage analytics are off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:
    import demixers  # noqa: F401
except ImportError:  # a Space runs the repository as is: use its src/ without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from demixers.web.app import build_app, launch_options

MODELS = [name.strip() for name in os.environ.get("DEMIXERS_WEB_MODELS", "").split(",") if name.strip()]
demo = build_app(models=MODELS, device=os.environ.get("DEMIXERS_WEB_DEVICE", "cpu"))

if __name__ == "__main__":
    # host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (a Space sets them)
    demo.queue().launch(**launch_options(demo))
