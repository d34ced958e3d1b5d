"""The pipeline's backend options (`demixers.pipelines.backends`) and the GPU benchmark script."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
from transformers import pipeline

from demixers.pipelines.backends import (
    add_performance_arguments,
    apply_performance_options,
    check_backend_options,
    check_performance_arguments,
)

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_performance_arguments(parser)
    return parser.parse_args(list(argv))


def test_performance_arguments_parse_and_default_to_eager_torch() -> None:
    args = parse()
    assert (args.backend, args.onnx_model, args.quantize) == (None, None, None)
    assert check_backend_options(args.backend, args.onnx_model, args.quantize) == "torch"
    args = parse("--quantize", "int8")
    assert check_backend_options(args.backend, args.onnx_model, args.quantize) == "onnx"
    with pytest.raises(SystemExit):
        parse("--compile")  # measured slower than eager on CPU: not offered
    with pytest.raises(SystemExit):
        parse("--backend", "tensorrt")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--backend", "torch", "--quantize", "int8"], "runs through onnxruntime"),
        (["--backend", "torch", "--onnx-model", "model.onnx"], "needs backend='onnx'"),
    ],
)
def test_contradictory_performance_arguments_fail_before_loading(argv: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_performance_arguments(parse(*argv))


def test_missing_onnx_file_is_reported_before_loading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_performance_arguments(parse("--onnx-model", str(tmp_path / "missing.onnx")))


def test_apply_performance_options_switches_the_pipeline(music_toy_dir: str) -> None:
    separator = pipeline("audio-source-separation", model=music_toy_dir)
    assert separator.backend == "torch"
    seen = {}
    separator.set_backend = lambda **options: seen.update(options)  # type: ignore[method-assign]
    assert apply_performance_options(separator, parse("--quantize", "int8")) is separator
    assert seen == {"backend": None, "onnx_model": None, "quantize": "int8"}


def test_gpu_script_parses_and_lists_every_combination() -> None:
    script = ROOT / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=60).returncode == 0
    result = subprocess.run([str(script), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    # 2 models x 3 dtypes x (eager with the reference, compile, compile + CUDA graphs)
    assert len(commands) == 18
    for dtype in ("fp32", "bf16", "fp16"):
        assert sum(f"--dtype {dtype}" in command for command in commands) == 6
    assert sum("--compile-mode reduce-overhead" in command for command in commands) == 6
    assert all("--lengths 60 600" in command and "--device cuda" in command for command in commands)
    bad = subprocess.run([str(script), "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


def test_separate_command_offers_and_checks_the_performance_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from demixers.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["separate", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--backend" in help_text and "--quantize" in help_text
    # refused right after parsing, before any model is loaded or input read
    code = main(["separate", str(tmp_path / "absent.wav"), "--quantize", "int8", "--dtype", "bfloat16"])
    assert code == 2
    assert "--dtype bfloat16" in capsys.readouterr().err
    code = main(["separate", str(tmp_path / "absent.wav"), "--onnx-model", str(tmp_path / "none.onnx")])
    assert code == 2
    assert "none.onnx" in capsys.readouterr().err
