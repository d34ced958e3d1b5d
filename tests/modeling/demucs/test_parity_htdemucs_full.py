"""Full-size parity: the released ``htdemucs`` architecture (random weights), one 7.8 s segment."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
import torch

from demixers.modeling.demucs import HTDemucsConfig, HTDemucsForSourceSeparation
from demixers.modeling.demucs.convert_demucs_original_to_hf import convert
from tests.modeling.demucs.reference_export import export_th, max_diffs

pytest.importorskip("demucs")
from demucs.htdemucs import HTDemucs
from demucs.states import load_model

# The init arguments stored in the released htdemucs checkpoint that differ from HTDemucs' defaults.
RELEASED_HTDEMUCS_KWARGS = dict(
    audio_channels=2, samplerate=44100, segment=Fraction(39, 5), channels=48, depth=4, nfft=4096,
    dconv_mode=3, dconv_comp=8, dconv_init=1e-3, bottom_channels=512, t_layers=5, t_heads=8,
    t_dropout=0.02, t_layer_scale=True, t_gelu=True, multi_freqs=[], rescale=0.1,
)  # fmt: skip


@pytest.mark.slow
def test_full_htdemucs_parity(tmp_path) -> None:
    torch.manual_seed(0)
    reference = HTDemucs(["drums", "bass", "other", "vocals"], **RELEASED_HTDEMUCS_KWARGS)
    path = export_th(reference, tmp_path, "955717e8")
    reference = load_model(path).eval()  # half-precision release weights, as the converter sees them
    convert(path, tmp_path / "out")
    ours = HTDemucsForSourceSeparation.from_pretrained(tmp_path / "out").eval()
    # our defaults are the release
    assert ours.config.architecture_dict() == HTDemucsConfig().architecture_dict()

    mix = 0.1 * torch.randn(1, 2, 343980, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = time.perf_counter()
        expected = reference(mix)
        middle = time.perf_counter()
        actual = ours(input_values=mix).audio_values
        end = time.perf_counter()
    diff, relative = max_diffs(actual, expected)
    print(
        f"full htdemucs, 7.8 s: max abs diff {diff:.3e}, relative {relative:.3e} "
        f"(reference {middle - start:.1f} s, ours {end - middle:.1f} s)"
    )
    assert relative <= 1e-5
