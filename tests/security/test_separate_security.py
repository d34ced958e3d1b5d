"""Issue #14, output side: `demixers separate`, the pipeline and the CLI under hostile or careless use.

Untrusted model folders (labels that are paths, corrupt weights, configs that are not JSON),
hostile inputs (file names, headers that lie about their size, absurd rates and batch sizes) and
hostile conditions (a full disk, a failure half-way through replacing stems, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from demixers import audio_utils
from demixers.audio_utils import check_sampling_rate
from demixers.feature_extraction_separation import SourceSeparationFeatureExtractor
from demixers.pipelines.audio_io import AudioFile, read_audio


def flac_claiming_frames(frames: int, sampling_rate: int = 8000) -> bytes:
    """A valid 100-sample FLAC whose STREAMINFO claims ``frames`` samples (a 36-bit field)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(100, dtype=np.float32), sampling_rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    # STREAMINFO bytes 18..25: rate (20 bits), channels - 1 (3), bits - 1 (5), total samples (36)
    bits = int.from_bytes(data[18:26], "big")
    bits = (bits & ~((1 << 36) - 1)) | frames
    data[18:26] = bits.to_bytes(8, "big")
    return bytes(data)


def wav_header_claiming_frames(frames: int) -> bytes:
    """A 44-byte PCM_16 mono wav header that claims ``frames`` frames of data and holds none."""
    import struct

    data_bytes = min(2 * frames, 0xFFFFFFFF - 36)
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack(
        "<I", data_bytes
    )


# -- 6. sizes claimed by a header are not trusted; rates below 1 kHz are refused ----------------


@pytest.mark.parametrize("as_path", [True, False])
def test_reader_does_not_preallocate_the_claimed_frame_count(tmp_path: Path, as_path: bool) -> None:
    encoded = flac_claiming_frames(2**33)
    with soundfile.SoundFile(io.BytesIO(encoded)) as handle:
        assert handle.frames == 2**33  # libsndfile believes the header
    source: Path | bytes = encoded
    if as_path:
        source = tmp_path / "liar.flac"
        source.write_bytes(encoded)
    tracemalloc.start()
    try:
        # libsndfile decodes the 100 samples, or (from a file) fails seeking past the end: either is
        # fine for a corrupt file, as long as it is a one-line error and nothing huge was allocated
        try:
            waveform, rate = read_audio(source)
        except ValueError as error:
            assert "not a readable audio file" in str(error)
        else:
            assert rate == 8000 and waveform.shape == (1, 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for 100 samples"


def test_44_byte_wav_claiming_2_31_frames_is_an_empty_file_not_an_allocation(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    path.write_bytes(wav_header_claiming_frames(2**31))
    assert path.stat().st_size == 44
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="zero samples"):
            read_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_streamed_reader_of_a_lying_header_reads_only_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "liar.flac"
    path.write_bytes(flac_claiming_frames(2**33))
    tracemalloc.start()
    samples = 0
    try:
        with pytest.raises(ValueError, match="not a readable audio file"):
            for block in AudioFile(path).blocks():
                samples += block.shape[-1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples <= 100
    assert peak < 16 * 2**20


@pytest.mark.parametrize("rate", [1, 8, 999])
def test_rates_below_1_khz_are_refused_with_the_value(tmp_path: Path, rate: int) -> None:
    assert audio_utils.MIN_SAMPLING_RATE == 1000
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        check_sampling_rate(rate)
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        SourceSeparationFeatureExtractor(sampling_rate=8000)(np.zeros(100, np.float32), sampling_rate=rate)
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        SourceSeparationFeatureExtractor(sampling_rate=rate)
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(2000, dtype=np.float32), rate)
    with pytest.raises(ValueError, match=f"slow.wav sampling rate is {rate} Hz"):
        read_audio(path)
    with pytest.raises(ValueError, match=f"slow.wav sampling rate is {rate} Hz"):
        AudioFile(path)
    assert check_sampling_rate(1000) == 1000


def test_pipeline_refuses_rates_below_1_khz(speech_toy) -> None:
    with pytest.raises(ValueError, match="500 Hz"):
        speech_toy(np.zeros(4000, np.float32), sampling_rate=500)
    with pytest.raises(ValueError, match="500 Hz"):
        speech_toy({"array": np.zeros(4000, np.float32), "sampling_rate": 500})


# -- 7. a list input: an error names the right item ------------------------------------------


def test_list_input_error_names_the_failing_item_for_model_errors(speech_toy, monkeypatch) -> None:
    quiet = np.full(8000, 0.1, dtype=np.float32)
    loud = np.full(8000, 0.9, dtype=np.float32)
    forward = speech_toy._separate_chunks

    def fails_on_loud_chunks(chunks):
        if float(chunks.abs().max()) > 0.5:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(chunks)

    monkeypatch.setattr(speech_toy, "_separate_chunks", fails_on_loud_chunks)
    with pytest.raises(RuntimeError, match=r"^inputs\[1\]: CUDA out of memory"):
        speech_toy([quiet, loud], sampling_rate=8000)
    with pytest.raises(RuntimeError, match=r"^inputs\[2\]: CUDA out of memory"):
        speech_toy([{"array": quiet, "sampling_rate": 8000}] * 2 + [{"array": loud, "sampling_rate": 8000}])


def test_list_input_bad_option_is_not_blamed_on_inputs_0(speech_toy) -> None:
    good = np.zeros(8000, dtype=np.float32)
    with pytest.raises(ValueError) as error_info:
        speech_toy([good, good], sampling_rate=8000, segment=-1.0)
    assert "segment" in str(error_info.value)
    assert "inputs[" not in str(error_info.value)
    with pytest.raises(ValueError) as error_info:
        speech_toy([good, good], sampling_rate=10)
    assert "10 Hz" in str(error_info.value) and "inputs[" not in str(error_info.value)


def test_list_input_error_from_an_unrebuildable_exception_keeps_its_type_and_names_the_item(
    speech_toy, monkeypatch
) -> None:
    class CodedError(RuntimeError):
        def __init__(self, code: int) -> None:
            super().__init__(code)
            self.code = code

        def __str__(self) -> str:
            return f"decoder error {self.code}"

    good = np.full(8000, 0.25, dtype=np.float32)
    calls = iter(range(100))
    forward = speech_toy._separate_chunks

    def fails_on_second_item(chunks):
        if next(calls) >= 1:
            raise CodedError(7)
        return forward(chunks)

    monkeypatch.setattr(speech_toy, "_separate_chunks", fails_on_second_item)
    with pytest.raises(CodedError) as error_info:
        speech_toy([good, good], sampling_rate=8000, segment=1.0)
    assert error_info.value.code == 7
    assert "while separating inputs[1]" in error_info.value.__notes__
