"""`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) vs one process with twice the batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import REPO, read_jsonl, recipe, write_recipe

# Both runs see the same samples in the same order (global batches cut from one seeded permutation,
# process r taking slice r) and DDP averages the two half-batch gradients, which is the gradient of
# the full batch. What differs is float summation order (two half-batch reductions plus a gloo
# all-reduce instead of one reduction), so the curves agree to float32 rounding amplified by a few
# Adam steps.
LOSS_RTOL = 1e-5  # measured: 1e-7 over 6 steps


@pytest.mark.skipif(
    shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="no accelerate CLI"
)
def test_two_cpu_processes_match_one_process_with_twice_the_batch(
    speech_corpus: Path, tmp_path: Path
) -> None:
    def config(batch_size: int) -> dict:
        return recipe(
            speech_corpus,
            tmp_path,
            model={"config": {"attention_dropout": 0.0}},  # no dropout: the runs must be comparable
            data={"samples_per_epoch": 24},
            training={"batch_size": batch_size, "max_steps": 6, "eval_steps": 6, "total_limit": 1},
        )

    single = tmp_path / "one_process"
    Trainer(config(4), single).train()

    double = tmp_path / "two_processes"
    path = write_recipe(config(2), tmp_path / "recipe.yaml")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launcher = str(Path(sys.executable).parent / "accelerate")
    completed = subprocess.run(
        [
            launcher,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
            str(REPO / "train.py"),
            "--config",
            str(path),
            "--output-dir",
            str(double),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    # recorded from inside the run: accelerator.num_processes
    state = json.loads((double / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["global_step"] == 6

    one = read_jsonl(single / "train_log.jsonl")
    two = read_jsonl(double / "train_log.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4, 5, 6]
    assert [r["samples_seen"] for r in one] == [r["samples_seen"] for r in two]
    losses_one = np.array([r["loss"] for r in one])
    losses_two = np.array([r["loss"] for r in two])
    np.testing.assert_allclose(losses_two, losses_one, rtol=LOSS_RTOL)
    # validation is sharded over the two processes and gathered: same items, same numbers
    eval_one = read_jsonl(single / "eval_log.jsonl")[-1]
    eval_two = read_jsonl(double / "eval_log.jsonl")[-1]
    assert eval_one["num_items"] == eval_two["num_items"] == 4
    assert eval_two["si_snri"] == pytest.approx(eval_one["si_snri"], abs=0.05)
    print("loss curve, 1 process x batch 4:", np.round(losses_one, 5).tolist())
    print("loss curve, 2 processes x batch 2:", np.round(losses_two, 5).tolist())
    print("max relative difference:", float(np.max(np.abs(losses_two - losses_one) / np.abs(losses_one))))
