"""The web demo's work without a browser: separation to files, errors, zip, images, cards."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from demixers.bundled import DEFAULT_MODEL_DIR, example_mixture
from demixers.web.core import (
    IMAGE_COLUMNS,
    ResultFolders,
    SeparationResult,
    Stem,
    WebError,
    card_text,
    model_card,
    overview_of_blocks,
    score_if_example,
    zip_stems,
)
from tests.web.conftest import write_mixture

gradio = pytest.importorskip("gradio")
from demixers.web.app import MAX_STEMS, SeparationApp  # noqa: E402  (needs gradio)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def app(tmp_path: Path) -> SeparationApp:
    return SeparationApp(results_root=tmp_path / "results")


def test_separation_writes_input_length_stems_zip_and_images(
    app: SeparationApp, tmp_path: Path, music_toy_dir: str
):
    mixture_path = write_mixture(tmp_path / "song.wav", seconds=2.5, sampling_rate=44100, channels=2)
    mixture, rate = soundfile.read(mixture_path, dtype="float32", always_2d=True)
    reports: list[tuple[float, str]] = []

    outcome = app.separate(
        str(mixture_path), music_toy_dir, None, None, 0, lambda f, desc: reports.append((f, desc))
    )

    labels = [label for label, _, _ in outcome["stems"]]
    assert labels == ["drums", "bass", "vocals", "other"]
    total = np.zeros_like(mixture)
    for label, wav, image in outcome["stems"]:
        stem, stem_rate = soundfile.read(wav, dtype="float32", always_2d=True)
        assert (stem_rate, stem.shape) == (rate, mixture.shape)
        assert soundfile.info(wav).subtype == "PCM_16"
        assert Path(wav).name == f"{label}.wav"
        assert Path(image).read_bytes()[:8] == PNG_MAGIC
        total += stem
    # the toy model is exactly additive: the 16-bit stems add up to the mixture within rounding
    np.testing.assert_allclose(total, mixture, atol=4 / 32768)
    with zipfile.ZipFile(outcome["zip"]) as archive:
        assert sorted(archive.namelist()) == sorted(f"{label}.wav" for label in labels)
        for _, wav, _ in outcome["stems"]:
            assert archive.read(Path(wav).name) == Path(wav).read_bytes()
    assert Path(outcome["mixture_image"]).read_bytes()[:8] == PNG_MAGIC
    assert "**song\\.wav**" in outcome["status"] and "4 stems" in outcome["status"]
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.95
    assert any("separating: 2.5 s of 2.5 s" in desc for _, desc in reports)


def test_page_updates_show_the_stems_and_hide_the_unused_slots(
    app: SeparationApp, tmp_path: Path, music_toy_dir: str
):
    mixture_path = write_mixture(tmp_path / "my_song.flac", seconds=0.5, sampling_rate=22050, channels=1)
    updates = app.on_separate(str(mixture_path), music_toy_dir, 0.25, 0.5, 1, progress=None)
    assert len(updates) == 3 + 4 * MAX_STEMS
    status, mixture_image, zip_button, *slots = updates
    assert status["value"].startswith("Separated **my\\_song\\.flac**")  # shown literally, not as markdown
    assert mixture_image["visible"] and zip_button["visible"]
    groups = [slots[index * 4] for index in range(MAX_STEMS)]
    assert [group["visible"] for group in groups] == [True] * 4 + [False] * (MAX_STEMS - 4)
    player, download, image = slots[1:4]
    assert player["label"] == "drums" and download["label"] == "Download drums.wav"
    assert soundfile.info(player["value"]).frames == round(0.5 * 22050)
    assert Path(image["value"]).is_file()


def test_stems_beyond_full_scale_are_rescaled_together_and_the_page_says_so(tmp_path: Path, capsys):
    from types import SimpleNamespace

    from demixers.pipelines.audio_source_separation import SeparationStream
    from demixers.web.core import separate_to_folder
    from tests.toy_models import ToySplitterConfig

    loud = np.stack([np.full((1, 400), 1.5, np.float32), np.full((1, 400), -0.75, np.float32)])
    stream = SeparationStream(["speaker_1", "speaker_2"], 8000, 1, 400, _blocks=lambda: iter([loud]))
    separator = SimpleNamespace(
        model=SimpleNamespace(config=ToySplitterConfig()), stream_file=lambda path, **options: stream
    )
    mixture_path = write_mixture(tmp_path / "loud.wav", seconds=0.05, sampling_rate=8000, channels=1)
    result = separate_to_folder(separator, "toy", mixture_path, tmp_path / "out")
    assert result.notes == [
        "the stems peaked at 1.500, beyond [-1, 1]; all of them were scaled together by 0.6667 to avoid "
        "clipping in 16-bit wav"
    ]
    first, second = (soundfile.read(stem.path, dtype="float32")[0] for stem in result.stems)
    np.testing.assert_allclose(first, 1.0, atol=1 / 32768)
    np.testing.assert_allclose(second, -0.5, atol=1 / 32768)  # the same factor for every stem
    assert "scaled together" in capsys.readouterr().err  # the CLI's own warning, for the server's log


def test_a_bad_file_gets_the_clis_one_line_error(
    app: SeparationApp, tmp_path: Path, capsys: pytest.CaptureFixture
):
    from demixers.cli import main

    upload = tmp_path / "upload-7f3a" / "bad.wav"
    upload.parent.mkdir()
    upload.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(WebError) as caught:
        app.separate(str(upload), None, None, None, 0)
    assert main(["separate", str(upload), "-o", str(tmp_path / "cli"), "-q"]) == 1
    cli_line = capsys.readouterr().err.strip().removeprefix("demixers separate: error: ")
    # the same words, with the upload's temporary folder left out
    assert str(caught.value) == cli_line.replace(str(upload), "bad.wav")
    assert str(upload.parent) not in str(caught.value) and "not a readable audio file" in str(caught.value)

    status, mixture_image, zip_button, *slots = app.on_separate(
        str(upload), None, None, None, 0, progress=None
    )
    assert status["value"].startswith("**Error:** bad\\.wav: not a readable audio file")
    assert "Traceback" not in status["value"]
    assert not mixture_image["visible"] and not zip_button["visible"]
    assert not any(slots[index * 4]["visible"] for index in range(MAX_STEMS))


def test_a_bug_is_one_line_in_the_page_and_a_traceback_in_the_log(
    app: SeparationApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import demixers.web.app as web_app

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(web_app, "separate_to_folder", broken)
    mixture_path = write_mixture(tmp_path / "song.wav", seconds=0.2, sampling_rate=8000, channels=1)
    status, *_ = app.on_separate(str(mixture_path), None, None, None, 0, progress=None)
    assert status["value"] == "**Error:** internal error while separating (see the server log)"
    assert "ZeroDivisionError: a bug" in caplog.text  # the traceback went to the server's log


@pytest.mark.parametrize(
    ("segment", "overlap", "shifts", "message"),
    [
        (None, 1.5, 0, "overlap must be a fraction in [0, 1), got 1.5"),
        (0.0, None, 0, "segment must be > 0 seconds, got 0.0"),
        (None, None, -1, "shifts must be >= 0, got -1"),
        (None, None, 1.5, "shifts must be a whole number, got 1.5"),
    ],
)
def test_option_errors_are_the_clis_words(
    app: SeparationApp, tmp_path: Path, music_toy_dir: str, segment, overlap, shifts, message
):
    mixture_path = write_mixture(tmp_path / "song.wav", seconds=0.2, sampling_rate=44100, channels=2)
    with pytest.raises(WebError) as caught:
        app.separate(str(mixture_path), music_toy_dir, segment, overlap, shifts)
    assert message in str(caught.value)
    assert not list((tmp_path / "results").rglob("*.wav"))  # refused before anything was written


def test_missing_input_and_unloadable_model_are_one_line(app: SeparationApp, tmp_path: Path):
    with pytest.raises(WebError, match="upload or record a mixture first"):
        app.separate(None, None, None, None, 0)
    mixture_path = write_mixture(tmp_path / "song.wav", seconds=0.2, sampling_rate=8000, channels=1)
    missing = tmp_path / "no_such_model"
    with pytest.raises(WebError, match=r"could not load model '.*no_such_model'") as caught:
        app.separate(str(mixture_path), str(missing), None, None, 0)
    assert "\n" not in str(caught.value)
    assert app.on_model_change(str(missing)).startswith("**Could not load this model:**")


def test_model_cards_for_the_side_panel(app: SeparationApp, music_toy_dir: str):
    bundled = app.on_model_change(None)
    assert bundled.startswith("# default_speech_8k")
    assert "model-index:" not in bundled  # the Hub metadata header is not shown
    assert "](spectrograms.png)" not in bundled and "*(figure:" in bundled
    assert bundled == model_card(str(DEFAULT_MODEL_DIR))
    toy = app.on_model_change(music_toy_dir)  # no README.md: what its config says
    assert "`demixers_toy_splitter`" in toy and "44100 Hz, 2 channel(s)" in toy and "`vocals`" in toy


def test_a_hub_id_is_loaded_and_its_card_shown(
    app: SeparationApp, tmp_path: Path, hub_server, music_toy_dir: str
):
    import shutil
    import uuid

    from huggingface_hub import HfApi

    folder = tmp_path / "repo"
    shutil.copytree(music_toy_dir, folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# Web toy\n\nA toy for the web demo.\n")
    repo_id = f"{hub_server.username}/web-toy-{uuid.uuid4().hex[:6]}"
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)

    assert app.on_model_change(repo_id) == "# Web toy\n\nA toy for the web demo."
    mixture_path = write_mixture(tmp_path / "song.wav", seconds=0.3, sampling_rate=44100, channels=2)
    outcome = app.separate(str(mixture_path), repo_id, None, None, 0)
    assert [label for label, _, _ in outcome["stems"]] == ["drums", "bass", "vocals", "other"]
    assert f"with `{repo_id}`" in outcome["status"]


def test_card_text_drops_front_matter_and_local_figures():
    readme = "---\nlicense: mit\ntags:\n- a\n---\n\n# Model\n\n![spectra](figure.png) ![remote](https://x.org/a.png)\n"
    assert card_text(readme) == "# Model\n\n*(figure: spectra)* ![remote](https://x.org/a.png)"


def test_overview_is_the_same_for_any_block_size_and_bounded_in_columns():
    rate, seconds = 16000, 3.0
    time_axis = np.arange(round(rate * seconds)) / rate
    signal = (0.5 * np.sin(2 * np.pi * 1000.0 * time_axis)).astype(np.float32)[None, :]
    whole = overview_of_blocks([signal], signal.shape[1], rate)
    pieces = overview_of_blocks(
        (signal[:, start : start + 777] for start in range(0, signal.shape[1], 777)), signal.shape[1], rate
    )
    np.testing.assert_allclose(pieces.spectrum_db, whole.spectrum_db, atol=1e-9)
    np.testing.assert_array_equal(pieces.maximum, whole.maximum)
    assert whole.spectrum_db.shape[1] <= IMAGE_COLUMNS
    np.testing.assert_allclose(whole.maximum.max(), 0.5, atol=1e-3)
    np.testing.assert_allclose(whole.minimum.min(), -0.5, atol=1e-3)
    peak_bins = whole.spectrum_db.argmax(axis=0)
    np.testing.assert_array_equal(peak_bins, round(1000.0 / (rate / 512)))  # 512-point FFT at 16 kHz

    # ten minutes at 8 kHz, fed block by block: still at most IMAGE_COLUMNS columns
    length = 10 * 60 * 8000
    blocks = (np.full((2, 48000), 0.25, dtype=np.float32) for _ in range(length // 48000))
    long = overview_of_blocks(blocks, length, 8000)
    assert long.spectrum_db.shape[1] <= IMAGE_COLUMNS and long.minimum.size == long.spectrum_db.shape[1]
    np.testing.assert_allclose(long.maximum, 0.25)


def test_zip_stems_is_all_or_nothing(tmp_path: Path):
    first = tmp_path / "a.wav"
    soundfile.write(first, np.zeros(100, dtype=np.float32), 8000)
    target = tmp_path / "out" / "stems.zip"
    with pytest.raises(FileNotFoundError):
        zip_stems([Stem("a", first), Stem("b", tmp_path / "missing.wav")], target)
    assert not target.parent.exists() or not list(target.parent.iterdir())  # no zip, no temporary left
    zip_stems([Stem("a", first)], target)
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == ["a.wav"]


def test_old_result_folders_are_removed_when_a_new_request_starts(tmp_path: Path):
    folders = ResultFolders(tmp_path, keep_seconds=60.0)
    old, recent = folders.new(), folders.new()
    stale = time.time() - 120.0
    os.utime(old, (stale, stale))
    third = folders.new()
    assert not old.exists() and recent.is_dir() and third.is_dir()


def test_only_the_bundled_example_is_scored(tmp_path: Path):
    example = example_mixture()
    copy = tmp_path / "mixture.wav"
    copy.write_bytes(example.mixture.read_bytes()[:-2] + b"\x01\x00")  # one sample differs
    result = SeparationResult(
        tmp_path, 8000, 80000, [Stem(name, path) for name, path in zip("ab", example.references, strict=True)]
    )
    assert score_if_example(copy, result) is None
    # the references themselves as stems: a perfect separation, far above the reference SI-SNRi
    text = score_if_example(example.mixture, result)
    assert text is not None and "reference for the bundled model: 6.38 dB" in text
    assert float(text.split("**")[1].split()[0]) > 30.0
