"""`demixers prepare synthetic-speech`: the TTS corpus generator and its BS.1770 loudness meter.

Most tests inject `FakeEngine` (pure Python, deterministic), so they run without the Debian TTS
packages; the ones that need espeak-ng / flite / festival skip when those are not installed.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import freqz, sosfreqz

from demixers.datasets_scripts import synthetic_speech as ss
from demixers.datasets_scripts.loudness import integrated_loudness, k_weighting, normalize_loudness
from demixers.datasets_scripts.synthetic_librimix import _speaker, speech_like

MODE = Path("Libri2Mix") / "wav8k" / "min"
TINY = {"train": 4, "validation": 2, "test": 2}


class FakeEngine(ss.Engine):
    """Harmonic "speech" at 16 kHz whose length follows the number of words; one identity per voice."""

    name = "fake"
    executable = "fake-tts"

    def __init__(self, num_voices: int = 6) -> None:
        self.num_voices = num_voices

    def available(self) -> bool:
        return True

    def voices(self) -> list[ss.VoiceSpec]:
        return [ss.VoiceSpec(f"voice{k}", "", f"fake:{k}") for k in range(self.num_voices)]

    def speaker_settings(self, rng: np.random.Generator, voice: ss.VoiceSpec) -> list[tuple[float, float]]:
        return [
            (float(rng.integers(0, 3)), 1.0),
            (float(rng.integers(3, 6)), round(rng.uniform(0.9, 1.1), 2)),
        ]

    def synthesize(self, speaker: ss.Speaker, text: str, workdir: Path) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng(zlib.crc32(f"{speaker.voice}|{speaker.pitch}|{text}".encode()))
        seconds = len(text.split()) / 2.6 * speaker.rate
        audio = speech_like(rng, _speaker(rng, int(speaker.voice[-1]) % 3), seconds, 16000)
        silence = np.zeros(1600)
        return np.concatenate([silence, 0.3 * audio, silence]), 16000


def _generate(root: Path, **kwargs) -> Path:
    options = {"seed": 3, "sizes": TINY, "engines": [FakeEngine(num_voices=10)], "chunk_size": 2, **kwargs}
    return ss.generate_corpus(root, **options)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def noisy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic speech") / "corpus", noise=True)


# ---------------------------------------------------------------------------------------------------
# loudness


def test_k_weighting_matches_the_recommendation_at_48k() -> None:
    (shelf_b, shelf_a), (high_b, high_a) = k_weighting(48000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(high_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(high_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)
    with pytest.raises(ValueError, match="sampling_rate"):
        k_weighting(3000)


@pytest.mark.parametrize(("rate", "tolerance"), [(48000, 0.005), (44100, 0.02), (8000, 0.05)])
def test_full_scale_997_hz_sine_reads_minus_3_01_lufs(rate: int, tolerance: float) -> None:
    t = np.arange(5 * rate) / rate
    assert integrated_loudness(np.sin(2 * np.pi * 997 * t), rate) == pytest.approx(-3.01, abs=tolerance)
    # two identical channels add their powers: +3.01 LU
    stereo = np.stack([np.sin(2 * np.pi * 997 * t)] * 2, axis=1)
    assert integrated_loudness(stereo, rate) == pytest.approx(0.0, abs=tolerance)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_white_noise_loudness_and_gating(rate: int) -> None:
    rng = np.random.default_rng(0)
    sigma = 0.05
    noise = sigma * rng.standard_normal(20 * rate)
    # expected: the mean square of K-weighted white noise is sigma^2 times the mean power gain
    response = np.ones(8192, dtype=complex)
    for b, a in k_weighting(rate):
        response *= freqz(b, a, worN=8192)[1]
    expected = -0.691 + 10 * np.log10(sigma**2 * np.mean(np.abs(response) ** 2))
    assert integrated_loudness(noise, rate) == pytest.approx(expected, abs=0.05)
    # silence is gated out (absolute gate), and a quiet part 20 dB down too (relative gate)
    gated = np.concatenate([noise, np.zeros(10 * rate), 0.1 * noise[: 5 * rate]])
    assert integrated_loudness(gated, rate) == pytest.approx(expected, abs=0.1)
    assert integrated_loudness(np.zeros(rate), rate) == float("-inf")
    assert integrated_loudness(normalize_loudness(noise, rate, -23.0), rate) == pytest.approx(-23.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"at least 0\.4 s"):
        integrated_loudness(noise[: rate // 4], rate)
    with pytest.raises(ValueError, match="silence"):
        normalize_loudness(np.zeros(rate), rate, -23.0)


def test_k_weighting_is_a_high_shelf_and_high_pass() -> None:
    sos = np.concatenate([np.concatenate([b, a])[None] for b, a in k_weighting(8000)])
    _, response = sosfreqz(sos, worN=[20.0, 997.0, 3500.0], fs=8000)
    gains = 20 * np.log10(np.abs(response))
    # the -0.691 of BS.1770 cancels the +0.69 dB the filter has at 997 Hz
    assert gains[0] < -10 and abs(gains[1] - 0.691) < 0.05 and 3.0 < gains[2] < 4.5


# ---------------------------------------------------------------------------------------------------
# text, catalogue, errors


def test_sentences_are_deterministic_and_safe() -> None:
    first = [ss.make_sentence(np.random.default_rng(5)) for _ in range(3)]
    assert first == [ss.make_sentence(np.random.default_rng(5)) for _ in range(3)]
    rng = np.random.default_rng(1)
    sentences = [ss.make_sentence(rng) for _ in range(300)]
    assert all(ss._SAFE_TEXT.fullmatch(s) and s[0].isupper() and s[-1] in ".?" for s in sentences)
    assert len(set(sentences)) == 300
    assert len({w.strip(".,?").lower() for s in sentences for w in s.split()}) > 250
    with pytest.raises(ValueError, match="text must hold only"):
        ss._check_text('say "hi"; rm -rf /')


def test_catalogue_splits_are_speaker_and_identity_disjoint() -> None:
    speakers = ss.build_catalogue(0, [FakeEngine(num_voices=10)])
    assert len(speakers) == 20 and len({s.id for s in speakers}) == 20
    assert all(s.id.isdigit() for s in speakers)
    by_split = {split: [s for s in speakers if s.split == split] for split in ss.SPLIT_FOLDERS}
    assert [len(v) for v in by_split.values()] == [12, 4, 4]  # 6/2/2 identities of 2 speakers
    identities = {split: {s.identity for s in v} for split, v in by_split.items()}
    assert not identities["train"] & identities["validation"]
    assert not identities["train"] & identities["test"]
    assert not identities["validation"] & identities["test"]
    assert speakers == ss.build_catalogue(0, [FakeEngine(num_voices=10)])
    other = ss.build_catalogue(1, [FakeEngine(num_voices=10)])
    assert [(s.split, s.identity) for s in other] != [(s.split, s.identity) for s in speakers]


def test_missing_tools_name_the_apt_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(ss.shutil, "which", lambda name: None)
    with pytest.raises(ss.MissingTTSError, match="not found: espeak-ng, flite, festival") as error:
        ss.build_catalogue(0)
    assert ss.APT_INSTALL in str(error.value)
    from demixers.cli import main

    assert main(["prepare", "synthetic-speech", "--output", str(tmp_path / "out"), "--num-train", "1"]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "apt-get install espeak-ng flite festival" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(ss.MissingTTSError, match="too few"):
        ss.build_catalogue(0, [FakeEngine(num_voices=2)])


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    from demixers.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "synthetic-speech", "--seed", "1"])  # --output is required
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "synthetic-speech", "ROOT", "--output", str(tmp_path)])  # no ROOT positional
    assert exit_info.value.code == 2
    capsys.readouterr()
    for bad in (["--num-workers", "0"], ["--num-test", "-1"], ["--min-seconds", "7"], ["--seed", "-2"]):
        assert main(["prepare", "synthetic-speech", "--output", str(tmp_path / "x"), *bad]) == 2
        assert capsys.readouterr().err.startswith("demixers prepare: error: ")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------
# corpus


def test_layout_csvs_loudness_and_sums(noisy_corpus: Path) -> None:
    root = noisy_corpus
    speakers = {row["id"]: row for row in _rows(root / "speakers.csv")}
    assert list(next(iter(speakers.values()))) == [
        "id", "split", "engine", "voice", "variant", "pitch", "rate", "identity",
    ]  # fmt: skip
    for split, folder in ss.SPLIT_FOLDERS.items():
        base = root / MODE / folder
        clean = _rows(root / MODE / "metadata" / f"mixture_{folder}_mix_clean.csv")
        both = _rows(root / MODE / "metadata" / f"mixture_{folder}_mix_both.csv")
        info = _rows(root / MODE / "metadata" / f"info_{folder}.csv")
        assert list(clean[0]) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
        assert list(both[0])[-2:] == ["noise_path", "length"]
        assert len(clean) == len(info) == TINY[split]
        for row, extra in zip(clean, info, strict=True):
            mixture_id = row["mixture_ID"]
            assert extra["mixture_ID"] == mixture_id
            ids = [u.split("-")[0] for u in mixture_id.split("_")]
            assert ids == [extra["speaker_1"], extra["speaker_2"]]
            assert {speakers[i]["split"] for i in ids} == {split}
            assert speakers[ids[0]]["identity"] != speakers[ids[1]]["identity"]
            pcm = {c: sf.read(base / c / f"{mixture_id}.wav", dtype="int16")[0].astype(np.int64) for c in
                   ("mix_clean", "mix_both", "s1", "s2", "noise")}  # fmt: skip
            assert all(len(x) == int(row["length"]) for x in pcm.values())
            assert 3 * 8000 <= int(row["length"]) <= 6 * 8000
            np.testing.assert_array_equal(pcm["mix_clean"], pcm["s1"] + pcm["s2"])
            np.testing.assert_array_equal(pcm["mix_both"], pcm["s1"] + pcm["s2"] + pcm["noise"])
            assert max(np.abs(x).max() for x in pcm.values()) <= round(0.9 * 32767) + 2
            loudness = {c: integrated_loudness(pcm[c] / 32767.0, 8000) for c in ("s1", "s2", "noise")}
            assert loudness["s1"] == pytest.approx(float(extra["source_1_loudness"]), abs=0.05)
            assert loudness["s2"] == pytest.approx(float(extra["source_2_loudness"]), abs=0.05)
            assert loudness["noise"] == pytest.approx(float(extra["noise_loudness"]), abs=0.05)
            assert abs(loudness["s2"] - loudness["s1"]) <= 5.05
            assert 3 - 0.05 <= loudness["s1"] - loudness["noise"] <= 9.05
            assert -33.05 + float(extra["scale_db"]) <= loudness["s1"] <= -24.95
            assert extra["source_1_text"][0].isupper() and "fake voice" in extra["source_1_voice"]


def test_same_seed_same_bytes_whatever_the_workers(noisy_corpus: Path, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", noise=True, num_workers=2)
    assert _digest(again) == _digest(noisy_corpus)
    other = _generate(tmp_path / "other", noise=True, seed=4)
    different = _digest(other)
    same_names = set(different) & set(_digest(noisy_corpus))
    assert not any(different[n] == _digest(noisy_corpus)[n] for n in same_names if n.endswith(".wav"))


def test_existing_corpus_needs_overwrite(tmp_path: Path) -> None:
    root = _generate(tmp_path / "corpus", sizes={"train": 2, "validation": 1, "test": 1})
    before = _digest(root)
    with pytest.raises(FileExistsError, match="--overwrite"):
        _generate(root, sizes={"train": 1, "validation": 1, "test": 1})
    assert _digest(root) == before
    (root / "mine.txt").write_text("kept")
    _generate(root, sizes={"train": 1, "validation": 1, "test": 1}, overwrite=True)
    assert len(list((root / MODE / "train-100" / "s1").iterdir())) == 1
    assert (root / "mine.txt").read_text() == "kept"


def test_loads_like_librimix(noisy_corpus: Path, tmp_path: Path, capsys) -> None:
    from datasets import load_from_disk

    from demixers.cli import main
    from demixers.datasets_scripts import load_separation_dataset

    dataset = load_separation_dataset(noisy_corpus, "test", prepared_dir=tmp_path / "prepared")
    assert len(dataset) == 2 and dataset.source_names == ["s1", "s2"]
    info = _rows(noisy_corpus / MODE / "metadata" / "info_test.csv")
    expected = {row["mixture_ID"]: [row["speaker_1"], row["speaker_2"]] for row in info}
    for index in range(2):
        item = dataset[index]
        assert dataset.speaker_ids(index) == expected[item["id"]]
        assert item["sources"].shape == (
            2,
            1,
            int(_rows(noisy_corpus / MODE / "metadata" / "mixture_test_mix_clean.csv")[index]["length"]),
        )
    output = tmp_path / "librimix"
    argv = ["prepare", "librimix", str(noisy_corpus), "--output", str(output), "--mix-type", "mix_both"]
    assert main(argv) == 0
    capsys.readouterr()
    prepared = load_from_disk(str(output))
    assert sorted(prepared) == ["test", "train_100", "validation"]
    assert prepared["test"].column_names[:5] == ["id", "mixture", "s1", "s2", "noise"]
    assert {r["id"]: r["speaker_ids"] for r in prepared["train_100"]} == {
        row["mixture_ID"]: [row["speaker_1"], row["speaker_2"]]
        for row in _rows(noisy_corpus / MODE / "metadata" / "info_train-100.csv")
    }


def test_example_mixture_uses_held_back_speakers() -> None:
    engines = [FakeEngine(num_voices=10)]
    mixture, sources, descriptions = ss.make_example_mixture(2, seconds=4.0, engines=engines)
    assert mixture.shape == (32000,) and sources.shape == (2, 32000) and mixture.dtype == np.float32
    np.testing.assert_array_equal(mixture, sources.sum(0))
    test_voices = {s.describe() for s in ss.build_catalogue(2, engines) if s.split == "test"}
    assert set(descriptions) <= test_voices and len(set(descriptions)) == 2
    again = ss.make_example_mixture(2, seconds=4.0, engines=engines)
    np.testing.assert_array_equal(again[0], mixture)


# ---------------------------------------------------------------------------------------------------
# the real Debian voices

needs_tts = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("espeak-ng", "flite", "festival")),
    reason=f"espeak-ng, flite and festival are not all installed ({ss.APT_INSTALL})",
)


@needs_tts
def test_real_voices_catalogue_and_tiny_corpus(tmp_path: Path) -> None:
    speakers = ss.build_catalogue(0)
    engines_per_split = {
        split: {s.engine for s in speakers if s.split == split} for split in ss.SPLIT_FOLDERS
    }
    assert engines_per_split["train"] == {"espeak-ng", "flite", "festival"}
    assert all("espeak-ng" in e and len(e) >= 2 for e in engines_per_split.values())
    sizes = {"train": 3, "validation": 2, "test": 2}
    one = ss.generate_corpus(tmp_path / "one", seed=1, sizes=sizes, chunk_size=1)
    two = ss.generate_corpus(tmp_path / "two", seed=1, sizes=sizes, chunk_size=2, num_workers=2)
    assert _digest(one) == _digest(two)
    for row in _rows(one / MODE / "metadata" / "info_dev.csv"):
        mixture_id = row["mixture_ID"]
        s1 = sf.read(one / MODE / "dev" / "s1" / f"{mixture_id}.wav")[0]
        assert integrated_loudness(s1, 8000) == pytest.approx(float(row["source_1_loudness"]), abs=0.05)


@needs_tts
def test_real_example_mixture() -> None:
    mixture, sources, descriptions = ss.make_example_mixture(0, seconds=10.0)
    assert mixture.shape == (80000,) and sources.shape == (2, 80000)
    assert all(np.sqrt(np.mean(s**2)) > 1e-3 for s in sources)
    assert len(descriptions) == 2
