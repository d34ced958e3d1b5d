"""``demixers web``: serve the separation page (`demixers.web.app`) on this machine.

Needs the ``web`` extra (gradio): without it, one line says ``pip install 'demixers[web]'``.
``-m MODEL`` (repeatable) adds models to the page's picker besides the bundled default; the first
one is preselected. Anything the picker gets goes through ``demixers separate``'s loader.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
INSTALL_HINT = "the web demo needs gradio: pip install 'demixers[web]'"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model folder, Hub id or catalogue name for the picker (repeatable; the first is "
        "preselected; the bundled default model is always offered)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST}; 0.0.0.0: all)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--share", action="store_true", help="also open a temporary public gradio.live link (needs internet)"
    )
    parser.add_argument(
        "--device", default="cpu", help="where the models run: cpu, cuda, cuda:1, mps (default: cpu)"
    )


def check_args(args: argparse.Namespace) -> None:
    """Option errors and a missing gradio, before anything heavy is imported."""
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if not args.host.strip():
        raise ValueError("--host must not be empty")
    if importlib.util.find_spec("gradio") is None:
        raise ValueError(INSTALL_HINT)


def run(args: argparse.Namespace) -> int:
    # a local demo does not report usage to gradio's servers unless the user opted in
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from .app import build_app, launch_options
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "gradio":
            raise
        raise ValueError(INSTALL_HINT) from None
    from ..pipelines.cli import check_device

    device = check_device(args.device)
    page = build_app(models=args.model, device=device)
    page.queue()
    page.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=False,
        **launch_options(page),
    )
    return 0
