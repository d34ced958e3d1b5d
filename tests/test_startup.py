"""Start-up (issue #23): help, option errors and light imports load neither torch nor transformers,
and the lazy registration still serves ``import demixers`` + Auto classes / pipeline in any order.

Each case runs in a fresh interpreter and asserts on ``sys.modules`` (no timings: the machine is
shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from demixers.cli import SUBCOMMANDS
from demixers.modeling.convert_cli import CONVERTERS

HEAVY = ("torch", "transformers", "datasets", "accelerate")

# Parses (or runs `main`, which exits on --help / argparse errors), then prints the heavy modules
# loaded and the exit code.
DRIVER = f"""
import contextlib, io, json, sys
from demixers.cli import main
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_info:
        code = exit_info.code
heavy = [name for name in {HEAVY!r} if name in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy, "stderr": err.getvalue()}}))
"""


def run_driver(argv: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def loaded_after(code: str) -> list[str]:
    program = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        [],
        *([name, "--help"] for name in SUBCOMMANDS),
        ["prepare", "librimix", "--help"],
    ],
    ids=lambda argv: " ".join(argv) or "no-command",
)
def test_help_imports_neither_torch_nor_transformers(argv: list[str]) -> None:
    outcome = run_driver(argv)
    assert outcome["code"] in (0, 2)
    assert outcome["heavy"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["separate", "x.wav", "--bit-depth", "24", "--format", "mp3"], "--bit-depth does not apply to mp3"),
        (["separate", "x.wav", "--format", "flac", "--bit-depth", "32"], "does not support --bit-depth 32"),
        (["separate", "x.wav", "--overlap", "1.5"], "overlap must be a fraction in [0, 1), got 1.5"),
        (["separate", "x.wav", "--segment", "0"], "segment must be > 0 seconds, got 0.0"),
        (["separate", "x.wav", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["separate", "x.wav", "--shifts", "-1"], "shifts must be >= 0, got -1"),
        (["separate", "x.wav", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["separate", "x.wav", "--format", "ogg"], "invalid choice: 'ogg'"),
        (["evaluate", "-m", "m", "-d", "d", "--max-items", "0"], "--max-items must be positive, got 0"),
        (["evaluate", "-m", "m", "-d", "d", "--segment", "-1"], "segment must be > 0 seconds, got -1.0"),
        (["convert", "no-such-format", "a", "b"], "invalid choice: 'no-such-format'"),
        (["train", "--output-dir", "x"], "the following arguments are required: --config"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_option_errors_come_before_any_model_and_heavy_import(argv: list[str], message: str) -> None:
    # -m points nowhere / no model exists: the option error must win, before any load is tried
    outcome = run_driver(argv)
    assert outcome["code"] == 2
    assert message in outcome["stderr"], outcome["stderr"]
    assert "could not load" not in outcome["stderr"] and "bundled default model" not in outcome["stderr"]
    assert outcome["heavy"] == []


def test_convert_help_lists_every_converter_without_importing_them() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demixers", "convert", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    for name in CONVERTERS:
        assert name in result.stdout
    assert run_driver(["convert", "--help"])["heavy"] == []


def test_converter_options_are_still_parsed() -> None:
    from demixers.cli import build_parser

    args = build_parser().parse_args(["convert", "dttnet", "in.ckpt", "out"])
    assert args.command == "convert" and args.converter == "dttnet"
    assert callable(args.convert_handler) and callable(args.handler)


@pytest.mark.parametrize(
    "module",
    ["demixers", "demixers.cli", "demixers.utils", "demixers.pipelines.cli", "demixers.trainers.cli"],
)
def test_light_modules_import_no_torch_or_transformers(module: str) -> None:
    assert loaded_after(f"import {module}") == []


@pytest.mark.parametrize("module", ["demixers.evaluation", "demixers.audio"])
def test_evaluation_and_audio_do_not_build_the_model_registry(module: str) -> None:
    code = (
        f"import {module}\n"
        "assert 'demixers.modeling.mossformer' not in sys.modules, 'a family was imported'\n"
        "assert 'demixers.pipelines.audio_source_separation' not in sys.modules"
    )
    assert "transformers" not in loaded_after(code)


def test_lazy_public_names_resolve() -> None:
    code = (
        "import demixers\n"
        "assert 'torch' not in sys.modules\n"
        "from demixers import MossFormerConfig, AudioSourceSeparationPipeline, MODEL_FAMILIES\n"
        "from demixers.modeling.mossformer import MossFormerConfig as Direct\n"
        "assert MossFormerConfig is Direct and len(MODEL_FAMILIES) == 12\n"
        "assert set(demixers.__all__) <= set(dir(demixers))\n"
        "for name in demixers.__all__: getattr(demixers, name)\n"
        "from demixers.evaluation import bss_eval\n"
        "import demixers.evaluation.bss_eval_v4, demixers.evaluation\n"
        "assert callable(demixers.evaluation.bss_eval) and demixers.evaluation.bss_eval is bss_eval\n"
    )
    assert "torch" in loaded_after(code)


REGISTRATION_ORDERS = {
    "demixers first, AutoModel": (
        "import demixers\nfrom transformers import AutoModel\nmodel = AutoModel.from_pretrained(MODEL)\n"
        "assert type(model).__name__ == 'MossFormerForSourceSeparation', type(model)"
    ),
    "transformers first, AutoConfig": (
        "from transformers import AutoConfig\nimport demixers\nconfig = AutoConfig.from_pretrained(MODEL)\n"
        "assert type(config).__name__ == 'MossFormerConfig', type(config)"
    ),
    "AutoFeatureExtractor": (
        "import demixers\nfrom transformers import AutoFeatureExtractor\n"
        "extractor = AutoFeatureExtractor.from_pretrained(MODEL)\n"
        "assert type(extractor).__name__ == 'SourceSeparationFeatureExtractor', type(extractor)"
    ),
    "pipeline": (
        "import demixers\nimport numpy as np\nfrom transformers import pipeline\n"
        "separator = pipeline('audio-source-separation', model=MODEL)\n"
        "out = separator(np.zeros(4000, dtype=np.float32), sampling_rate=8000)\n"
        "assert len(out) == 2 and out[0]['audio'].shape[-1] == 4000, out"
    ),
    "two threads at once": (
        "import demixers, threading\nfrom transformers import AutoConfig\nresults = []\n"
        "def load():\n    results.append(type(AutoConfig.from_pretrained(MODEL)).__name__)\n"
        "threads = [threading.Thread(target=load) for _ in range(2)]\n"
        "[thread.start() for thread in threads]\n[thread.join() for thread in threads]\n"
        "assert results == ['MossFormerConfig'] * 2, results"
    ),
    "from_config after the family is imported directly": (
        "import demixers\n"
        "from demixers.modeling.mossformer.configuration_mossformer import MossFormerConfig\n"
        "from transformers import AutoModel\nconfig = MossFormerConfig.from_pretrained(MODEL)\n"
        "assert type(AutoModel.from_config(config)).__name__ == 'MossFormerForSourceSeparation'"
    ),
}


@pytest.mark.parametrize("order", sorted(REGISTRATION_ORDERS))
def test_import_demixers_then_auto_classes_and_pipeline_work(order: str) -> None:
    from demixers.bundled import default_model_dir

    code = f"MODEL = {str(default_model_dir())!r}\n" + REGISTRATION_ORDERS[order]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_without_import_demixers_transformers_does_not_know_the_families() -> None:
    # the registration is demixers' doing (the previous test is not vacuous)
    from demixers.bundled import default_model_dir

    code = (
        "from transformers import AutoConfig\n"
        f"try:\n    AutoConfig.from_pretrained({str(default_model_dir())!r})\n"
        "except (ValueError, KeyError) as error:\n    print('unknown')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.stdout.strip() == "unknown", (result.stdout, result.stderr[-2000:])


# -- the build is silent: every bundled data folder is a declared package, no license classifier --


def read_setup_cfg() -> tuple[dict, Path]:
    from setuptools.config.setupcfg import read_configuration

    root = Path(__file__).resolve().parents[1]
    return read_configuration(root / "setup.cfg", find_others=False, ignore_option_errors=False), root


def test_every_folder_under_the_package_is_declared() -> None:
    # setuptools warns "Package would be ignored" for an importable folder missing from `packages`
    import os

    configuration, root = read_setup_cfg()
    packages = set(configuration["options"]["packages"])
    package_root = root / "src" / "demixers"
    folders = {"demixers"}
    for folder, dirs, _ in os.walk(package_root):
        dirs[:] = [name for name in dirs if name != "__pycache__"]
        relative = os.path.relpath(folder, package_root)
        if relative != ".":
            folders.add("demixers." + relative.replace(os.sep, "."))
    assert "demixers.bundled.default_speech_8k" in folders and "demixers.bundled.example" in folders
    assert folders - packages == set()
    assert not any("__pycache__" in name or "egg-info" in name for name in packages)


def test_no_deprecated_license_classifier() -> None:
    configuration, _ = read_setup_cfg()
    classifiers = configuration["metadata"]["classifiers"]
    assert not [line for line in classifiers if line.startswith("License ::")]
    assert configuration["metadata"]["license"] == "Apache-2.0"
