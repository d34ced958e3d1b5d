"""`demixers separate` jobs across real processes: two ranks through Accelerate's launcher
(`--num-processes 2` runs `accelerate launch --multi_gpu --num_processes 2` with
``ACCELERATE_USE_CPU=true``: gloo on CPU) against one process, and a run killed with SIGKILL then
resumed. Slow (each run starts Python, torch and transformers again): two runs in all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile
import torch

from demixers.cli import main
from demixers.pipelines.separate_job import MANIFEST_NAME, WORK_DIR_NAME
from tests.pipelines.conftest import sines

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def make_folder(folder: Path, seconds: list[float]) -> None:
    folder.mkdir(parents=True)
    for index, length in enumerate(seconds):
        mixture = sines([300.0 + 40 * index, 1100.0 + 70 * index], 8000, length).sum(axis=0)
        soundfile.write(folder / f"take_{index}.wav", mixture, 8000, subtype="PCM_16")


def stem_files(out: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and WORK_DIR_NAME not in path.parts and path.name != MANIFEST_NAME
    }


def records(out: Path) -> dict[str, dict]:
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    return {Path(record["key"]).name: record for record in map(json.loads, lines)}


def one_thread_main(argv: list[str]) -> int:
    """`main` with torch on one thread, like the subprocesses (the numbers must be the same bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(
    shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="no accelerate"
)
def test_two_processes_write_exactly_what_one_process_writes(tmp_path: Path, mossformer_dir: str) -> None:
    folder = tmp_path / "in"
    make_folder(folder, [0.9, 0.3, 0.7, 0.5, 0.4])
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    options = ["-m", mossformer_dir, "--segment", "0.25", "-q"]

    single = tmp_path / "one"
    assert one_thread_main(["separate", str(folder), "-o", str(single), "--manifest", *options]) == 1

    double = tmp_path / "two"
    command = [
        sys.executable,
        "-m",
        "demixers",
        "separate",
        str(folder),
        "-o",
        str(double),
        "--num-processes",
        "2",
    ]
    result = subprocess.run(
        [*command, *options], env=environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the corrupt input, and only it, failed
    assert (
        "corrupt.wav" in result.stderr and "5 done" in result.stderr and "on 2 process(es)" in result.stderr
    )

    one, two = stem_files(single), stem_files(double)
    assert len(one) == 10 and sorted(one) == sorted(two)
    assert all(one[name] == two[name] for name in one)  # bit for bit
    by_rank = records(double)
    assert by_rank["corrupt.wav"]["status"] == "failed" and "corrupt.wav" in by_rank["corrupt.wav"]["error"]
    done = {name: record for name, record in by_rank.items() if record["status"] == "done"}
    assert len(done) == 5 and {record["num_processes"] for record in done.values()} == {2}
    # duration-balanced, longest first: 0.9 + 0.4 (+ the unreadable 0 s file) vs 0.7 + 0.5 + 0.3
    ranks = {name: record["rank"] for name, record in done.items()}
    assert ranks["take_0.wav"] == ranks["take_4.wav"] != ranks["take_2.wav"] == ranks["take_3.wav"]
    assert ranks["take_1.wav"] == ranks["take_2.wav"]
    summary = json.loads((double / WORK_DIR_NAME / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["done"] == 5 and summary["failed"] == 1
    assert summary["audio_hours"] == pytest.approx(2.8 / 3600)
    assert not list((double / WORK_DIR_NAME).glob("journal-*"))  # merged


def test_killed_run_resumes_without_redoing_finished_items(tmp_path: Path, mossformer_dir: str) -> None:
    folder = tmp_path / "in"
    make_folder(folder, [1.5] * 6)
    out = tmp_path / "out"
    argv = [
        "separate",
        str(folder),
        "-o",
        str(out),
        "-m",
        mossformer_dir,
        "--segment",
        "0.1",
        "--manifest",
        "-q",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "demixers", *argv], env=environment(), stderr=subprocess.PIPE, text=True
    )
    done_before: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            lines = []
            for journal in (out / WORK_DIR_NAME).glob("journal-*.jsonl"):
                lines += journal.read_text().splitlines()
            done_before = [json.loads(line)["input"] for line in lines if '"status": "done"' in line]
            if done_before:
                break
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # mid-way: no cleanup, no merge
        process.communicate(timeout=60)
    assert 1 <= len(done_before) < 6, f"the run was not caught mid-way: {done_before}"
    assert not (out / MANIFEST_NAME).exists()  # never merged
    finished = {Path(name).stem for name in done_before}
    stamps = {name: (out / name / "speaker_1.wav").stat().st_mtime_ns for name in finished}

    assert one_thread_main(argv) == 0
    summary = json.loads((out / WORK_DIR_NAME / "summary.json").read_text())
    assert summary["skipped"] == len(finished) and summary["done"] == 6 - len(finished)
    assert summary["failed"] == 0
    statuses = {Path(name).stem: record["status"] for name, record in records(out).items()}
    assert statuses == {f"take_{k}": ("skipped" if f"take_{k}" in finished else "done") for k in range(6)}
    for name in finished:  # finished items were not separated again
        assert (out / name / "speaker_1.wav").stat().st_mtime_ns == stamps[name]
    assert sorted(stem_files(out)) == sorted(f"take_{k}/speaker_{s}.wav" for k in range(6) for s in (1, 2))
    leftovers = [path for path in out.rglob(".*") if path.is_file() and WORK_DIR_NAME not in path.parts]
    assert leftovers == []  # the killed run's temporary stems were removed
    assert not list((out / WORK_DIR_NAME).glob("journal-*"))  # the dead run's journal was folded in
