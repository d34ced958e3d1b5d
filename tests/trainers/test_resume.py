"""Exact resume: a run killed with SIGKILL and resumed ends with bitwise-identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from demixers.trainers import checkpointing as ckpt
from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import REPO, read_jsonl, recipe, write_recipe


def _state(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    weights = load_file(folder / "model.safetensors")
    optimizer = torch.load(folder / "optimizer.bin", map_location="cpu", weights_only=True)
    return weights, optimizer


def _assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        for key, value in a["state"][index].items():
            assert torch.equal(value, b["state"][index][key]), (index, key)


def test_sigkill_mid_run_then_resume_is_bitwise_identical(speech_corpus: Path, tmp_path: Path) -> None:
    # dropout on, dynamic mixing on, plateau schedule fed by validation, EMA: every random and
    # stateful part of a step has to be restored exactly
    config = recipe(
        speech_corpus,
        tmp_path,
        data={"dynamic_mixing": True, "samples_per_epoch": 16, "max_eval_samples": 2},
        training={
            "max_steps": 10,
            "logging_steps": 3,  # averaged log lines must be cut the same way in both runs
            "save_steps": 2,
            "eval_steps": 3,
            "total_limit": 2,
            "scheduler": "plateau",
            "plateau_patience": 0,
            "warmup_steps": 2,
            "ema_decay": 0.9,
        },
    )
    reference = tmp_path / "uninterrupted"
    Trainer(config, reference).train()

    killed = tmp_path / "killed"
    path = write_recipe(config, tmp_path / "recipe.yaml")
    # same intra-op thread count as this process: float reductions split the same way
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", str(path), "--output-dir", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while not (killed / ckpt.checkpoint_name(4) / ckpt.TRAINER_STATE_NAME).is_file():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached step 4"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    steps = [step for step, _ in ckpt.find_checkpoints(killed)]
    assert 4 in steps and 10 not in steps, steps  # really killed mid-run

    summary = Trainer(config, killed, resume=True).train()
    assert summary["global_step"] == 10

    final = ckpt.checkpoint_name(10)
    expected_weights, expected_optimizer = _state(reference / final)
    actual_weights, actual_optimizer = _state(killed / final)
    assert expected_weights.keys() == actual_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(tensor, actual_weights[name]), f"{name} differs after resume"
    _assert_same_optimizer(expected_optimizer, actual_optimizer)
    # EMA weights (the exported model) too
    ema_expected = load_file(reference / final / "model" / "model.safetensors")
    ema_actual = load_file(killed / final / "model" / "model.safetensors")
    assert all(torch.equal(ema_expected[k], ema_actual[k]) for k in ema_expected)
    # and the logged curves agree step for step
    assert read_jsonl(reference / "train_log.jsonl") == read_jsonl(killed / "train_log.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(reference / "eval_log.jsonl")) == strip(read_jsonl(killed / "eval_log.jsonl"))
