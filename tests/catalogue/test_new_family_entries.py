"""Catalogue entries of the families that came after the catalogue (issues 18 and 19): BS-/Mel-Band
RoFormer community checkpoints (a yaml config plus a checkpoint, weights on GitHub releases checked
against GitHub's published asset digest), MossFormer2 (ModelScope 8 kHz, ClearerVoice 16 kHz) and the
schema pieces they need.

The viperx BS-RoFormer release is rebuilt with tiny random weights by the MSST reference (the module
audio-separator ships), saved as MSST saves it (a bare state dict, the yaml with ``!!python/tuple``)
under the original names, and served with GitHub's release listing at the original URL paths:
``github.com/TRvlvr/model_repo/releases/download/...``, ``raw.githubusercontent.com/ZFTurbo/...`` and
``api.github.com/repos/...`` all reach the loopback server through ``DEMIXERS_MIRROR_URL``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
import yaml

from demixers.catalogue import download as download_module
from demixers.catalogue.download import ChecksumError, download_path
from demixers.catalogue.entries import BUILTIN_ENTRIES
from demixers.catalogue.resolve import builtin_catalogue, converted_path, resolve_model, use_catalogue
from demixers.catalogue.schema import Catalogue
from demixers.cli import main
from demixers.model_cards.architectures import architecture_for
from tests.catalogue.file_server import LoopbackFileServer
from tests.modeling.roformer_references import SMALL_BS_KWARGS, msst_module, reference_output

ALIAS = "bs_roformer_viperx_1297"
CHECKPOINT_NAME = "model_bs_roformer_ep_317_sdr_12.9755.ckpt"
CONFIG_NAME = "model_bs_roformer_ep_317_sdr_12.9755.yaml"
RELEASE_LISTING = "/repos/TRvlvr/model_repo/releases/tags/all_public_uvr_models"
CHUNK_SIZE = 4410


def _builtin(alias: str) -> dict[str, Any]:
    return next(dict(entry) for entry in BUILTIN_ENTRIES if entry["alias"] == alias)


def _url_path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def _msst_yaml(model_kwargs: dict[str, Any]) -> str:
    """The yaml as MSST writes it: tuples tagged ``!!python/tuple``, single-stem vocals training."""
    data = {
        "audio": {"chunk_size": CHUNK_SIZE, "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.0},
        "model": {**model_kwargs, "freqs_per_bands": list(model_kwargs["freqs_per_bands"])},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals", "use_amp": True},
        "inference": {"batch_size": 1, "num_overlap": 2},
    }
    text = yaml.safe_dump(data, sort_keys=False)
    assert "freqs_per_bands:\n" in text
    return text.replace("freqs_per_bands:\n", "freqs_per_bands: !!python/tuple\n")


class ViperxRelease:
    """The tiny stand-in of the viperx release: served files, the test entry, the reference model."""

    def __init__(self) -> None:
        from tests.modeling.parity_utils import perturb_parameters

        kwargs = {**SMALL_BS_KWARGS, "num_stems": 1}
        torch.manual_seed(0)
        self.reference = perturb_parameters(msst_module("bs_roformer").BSRoformer(**kwargs).eval(), seed=0)
        buffer = io.BytesIO()
        torch.save(self.reference.state_dict(), buffer)  # MSST's checkpoints are bare state dicts
        self.checkpoint = buffer.getvalue()
        self.config = _msst_yaml(kwargs).encode()
        entry = _builtin(ALIAS)
        config_file, checkpoint_file = entry["files"]
        # the built-in entry pins the real yaml's digest: the test entry pins the tiny one's
        config_file = {
            **config_file,
            "sha256": hashlib.sha256(self.config).hexdigest(),
            "size": len(self.config),
        }
        entry["files"] = [config_file, checkpoint_file]
        self.entry = entry
        self.checkpoint_path = _url_path(checkpoint_file["url"])
        self.config_path = _url_path(config_file["url"])

    def listing(self, digest: str | None) -> bytes:
        asset: dict[str, Any] = {"name": CHECKPOINT_NAME, "size": len(self.checkpoint)}
        if digest is not None:
            asset["digest"] = digest
        other = {"name": "htdemucs_ft.yaml", "digest": "sha256:" + "0" * 64}
        return json.dumps({"id": 7, "tag_name": "all_public_uvr_models", "assets": [other, asset]}).encode()

    def serve(self, server: LoopbackFileServer) -> None:
        server.add(self.checkpoint_path, self.checkpoint)
        server.add(self.config_path, self.config)
        server.add(RELEASE_LISTING, self.listing("sha256:" + hashlib.sha256(self.checkpoint).hexdigest()))


@pytest.fixture(scope="module")
def viperx() -> ViperxRelease:
    return ViperxRelease()


@pytest.fixture(scope="module")
def file_server(viperx: ViperxRelease) -> Iterator[LoopbackFileServer]:
    server = LoopbackFileServer().start()
    viperx.serve(server)
    yield server
    server.stop()


@pytest.fixture
def roformer_env(
    viperx: ViperxRelease, file_server: LoopbackFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Catalogue]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("DEMIXERS_MIRROR_URL", file_server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    viperx.serve(file_server)  # undo what a test changed
    file_server.clear_log()
    with use_catalogue(Catalogue([viperx.entry])) as catalogue:
        yield catalogue


def test_viperx_alias_downloads_verifies_converts_loads_and_separates(
    roformer_env: Catalogue,
    viperx: ViperxRelease,
    file_server: LoopbackFileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModel

    folder = Path(resolve_model(ALIAS, quiet=True))
    assert folder == converted_path(roformer_env[ALIAS])
    requested = sorted(path for _, path, _ in file_server.requests)
    assert requested == sorted([RELEASE_LISTING, viperx.config_path, viperx.checkpoint_path])
    record = json.loads((folder / "demixers_source.json").read_text())
    assert record["sha256"][CHECKPOINT_NAME] == hashlib.sha256(viperx.checkpoint).hexdigest()

    # the converted model is the MSST reference: the stem, and the residual as the second source
    model = AutoModel.from_pretrained(folder).eval()
    assert model.config.model_type == "bs_roformer" and model.config.source_names == ["vocals", "other"]
    mixture = torch.randn(1, 2, 32 * 138, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        ours = model(mixture).audio_values
    expected = reference_output(viperx.reference, mixture)[:, 0]
    scale = float(expected.abs().max())
    assert float((ours[:, 0] - expected).abs().max()) / scale < 1e-5
    assert float((ours[:, 1] - (mixture - expected)).abs().max()) / scale < 1e-5

    # separate by name (the chunked pipeline), then again: the cache makes no request
    audio = np.random.default_rng(0).standard_normal((2 * CHUNK_SIZE + 1000, 2)).astype(np.float32) * 0.1
    soundfile.write(tmp_path / "song.wav", audio, 44100, subtype="FLOAT")
    file_server.clear_log()
    output = tmp_path / "out"
    assert main(["separate", str(tmp_path / "song.wav"), "-m", ALIAS, "-o", str(output), "-q"]) == 0
    assert file_server.requests == []
    assert sorted(path.name for path in (output / "song").iterdir()) == ["other.wav", "vocals.wav"]
    vocals, rate = soundfile.read(output / "song" / "vocals.wav", dtype="float32")
    other, _ = soundfile.read(output / "song" / "other.wav", dtype="float32")
    assert rate == 44100 and vocals.shape == audio.shape
    assert float(np.abs(vocals).max()) > 1e-3  # a separated stem, not silence
    assert float(np.abs(vocals + other - audio).max()) < 1e-4  # the residual completes the mixture

    # offline: the converted folder is used without any request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(ALIAS) == str(folder) and file_server.requests == []


def test_a_checkpoint_that_is_not_what_github_publishes_is_deleted(
    roformer_env: Catalogue, viperx: ViperxRelease, file_server: LoopbackFileServer
) -> None:
    file_server.add(viperx.checkpoint_path, viperx.checkpoint[:-8] + b"tampered")
    release_file = roformer_env[ALIAS].files[1]
    published = hashlib.sha256(viperx.checkpoint).hexdigest()
    with pytest.raises(
        ChecksumError, match=rf"{ALIAS}: checksum mismatch for .*{CHECKPOINT_NAME}.*{published}"
    ):
        resolve_model(ALIAS, quiet=True)
    assert not download_path(release_file).exists()
    assert not download_path(release_file).with_name(download_path(release_file).name + ".part").exists()
    assert not converted_path(roformer_env[ALIAS]).exists()


@pytest.mark.parametrize("digest", [None, "md5:0123456789abcdef0123456789abcdef", "sha256:xyz"])
def test_an_asset_without_a_sha256_digest_is_refused_before_downloading(
    roformer_env: Catalogue, viperx: ViperxRelease, file_server: LoopbackFileServer, digest: str | None
) -> None:
    file_server.add(RELEASE_LISTING, viperx.listing(digest))
    with pytest.raises(
        ChecksumError, match=f"{ALIAS}: GitHub publishes no sha256 digest for .*{CHECKPOINT_NAME}"
    ):
        resolve_model(ALIAS, quiet=True)
    assert file_server.requests_for(viperx.checkpoint_path) == []


def test_an_asset_beyond_the_release_listing_is_found_in_the_paged_asset_list(
    roformer_env: Catalogue, viperx: ViperxRelease, file_server: LoopbackFileServer
) -> None:
    # GitHub's release object lists a limited number of assets; the asset list pages through all
    digest = hashlib.sha256(viperx.checkpoint).hexdigest()
    file_server.add(RELEASE_LISTING, json.dumps({"id": 7, "assets": []}).encode())
    page = "/repos/TRvlvr/model_repo/releases/7/assets?per_page=100&page="
    file_server.add(
        page + "1",
        json.dumps([{"name": f"other{i}.ckpt", "digest": "sha256:" + "1" * 64} for i in range(100)]).encode(),
    )
    file_server.add(
        page + "2", json.dumps([{"name": CHECKPOINT_NAME, "digest": "sha256:" + digest}]).encode()
    )
    release_file = roformer_env[ALIAS].files[1]
    assert download_module._expected_sha256(ALIAS, release_file, {}) == digest
    file_server.add(page + "2", b"[]")
    with pytest.raises(ValueError, match=f"lists no asset '{CHECKPOINT_NAME}'"):
        download_module._expected_sha256(ALIAS, release_file, {})


# -- schema and the built-in entries ----------------------------------------------------------------


def _entry(**change: Any) -> dict[str, Any]:
    return {
        "alias": "broken",
        "family": "bs_roformer",
        "task": "music",
        "sources": ["vocals", "other"],
        "sampling_rate": 44100,
        "converter": "msst-roformer",
        "license": "unknown",
        "files": [
            {"url": "https://example.org/a.yaml", "sha256": "0" * 64},
            {"url": "https://github.com/o/r/releases/download/v1/a.ckpt", "checksum_from": "github-release"},
        ],
        "entry_point": ["a.yaml", "a.ckpt"],
        **change,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entry_point": ["a.yaml", "b.ckpt"]}, r"entry_point \['b.ckpt'\] is none of its files"),
        ({"entry_point": []}, "entry_point must not be an empty list"),
        ({"entry_point": ["a.yaml", "../a.ckpt"]}, "relative path without"),
        (
            {"files": [{"url": "https://example.org/a.ckpt", "checksum_from": "github-release"}]},
            "checksum_from 'github-release' is only for https://github.com/",
        ),
        (
            {
                "files": [
                    {
                        "hub": {"repo_id": "o/r", "revision": "main", "filename": "a.ckpt"},
                        "checksum_from": "github-release",
                    }
                ]
            },
            "checksum_from 'github-release' is only for",
        ),
    ],
)
def test_invalid_multi_file_entries_are_refused_naming_the_alias(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        Catalogue([_entry(**change)])
    assert "'broken'" in str(error.value)


def test_a_list_entry_point_is_kept_in_order_and_in_the_cache_key() -> None:
    from demixers.catalogue.resolve import cache_key, converter_inputs

    entry = Catalogue([_entry()])["broken"]
    assert entry.entry_point == ("a.yaml", "a.ckpt")
    assert converter_inputs(entry, Path("/r")) == [Path("/r/a.yaml"), Path("/r/a.ckpt")]
    swapped = Catalogue([_entry(entry_point=["a.ckpt", "a.yaml"])])["broken"]
    assert cache_key(entry) != cache_key(swapped)
    assert entry.files[1].checksum_status == "GitHub asset sha256"


ROFORMER_ALIASES = {
    "bs_roformer_viperx_1297": ("bs_roformer", "model_bs_roformer_ep_317_sdr_12.9755", ["vocals", "other"]),
    "bs_roformer_viperx_1053": ("bs_roformer", "model_bs_roformer_ep_937_sdr_10.5309", ["other", "vocals"]),
    "mel_band_roformer_viperx_1143": (
        "mel_band_roformer",
        "model_mel_band_roformer_ep_3005_sdr_11.4360",
        ["vocals", "other"],
    ),
    "mel_band_roformer_kj_vocals": (
        "mel_band_roformer",
        "config_vocals_mel_band_roformer_kj",
        ["vocals", "other"],
    ),
}


def test_the_builtin_roformer_entries_are_pinned_and_name_the_msst_converter() -> None:
    catalogue = builtin_catalogue()
    for alias, (family, name, sources) in ROFORMER_ALIASES.items():
        entry = catalogue[alias]
        assert (entry.family, entry.converter, list(entry.sources)) == (family, "msst-roformer", sources)
        assert entry.refused is None and entry.sampling_rate == 44100 and entry.task == "music"
        config, checkpoint = entry.files
        assert entry.entry_point == (config.path, checkpoint.path)
        # the yaml: MSST's file at the commit that last changed it, with its full digest
        assert config.url is not None and config.url.startswith(
            "https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/"
        )
        commit = config.url.split("/")[5]
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
        assert config.sha256 is not None and config.path.endswith(".yaml") and name in config.path
        assert checkpoint.checksum_from in ("github-release", "hub-lfs") and checkpoint.path.endswith(".ckpt")
        assert entry.score is not None and entry.score["dataset"] == "MVSep Multisong"
        assert "license" in entry.unverified
        # the card cites the paper once, from the family's architecture entry
        architecture = architecture_for(entry.family)
        arxiv = {"bs_roformer": "2309.02612", "mel_band_roformer": "2310.01809"}[entry.family]
        assert (
            architecture is not None and architecture.bibtex.startswith("@") and arxiv in architecture.bibtex
        )
    viperx = catalogue["bs_roformer_viperx_1297"]
    assert viperx.files[1].url == (
        "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/" + CHECKPOINT_NAME
    )
    assert viperx.score is not None and viperx.score["value"] == 10.87
    kj = catalogue["mel_band_roformer_kj_vocals"].files[1]
    assert (kj.hub_repo_id, kj.hub_filename, kj.checksum_from) == (
        "KimberleyJSN/melbandroformer",
        "MelBandRoformer.ckpt",
        "hub-lfs",
    )


def test_converter_function_names_the_function_called(
    roformer_env: Catalogue, viperx: ViperxRelease, file_server: LoopbackFileServer
) -> None:
    from demixers.catalogue.resolve import cache_key

    named = Catalogue([{**viperx.entry, "converter_function": "convert_checkpoint"}])[ALIAS]
    assert named.converter_function == "convert_checkpoint" and cache_key(named) != cache_key(
        roformer_env[ALIAS]
    )
    typo = Catalogue([{**viperx.entry, "converter_function": "load_yaml_config_typo"}])
    with (
        use_catalogue(typo),
        pytest.raises(
            ValueError, match=f"{ALIAS}: converter 'msst-roformer' .* has no function load_yaml_config_typo"
        ),
    ):
        resolve_model(ALIAS, quiet=True)
    with use_catalogue(Catalogue([{**viperx.entry, "converter_function": "convert_checkpoint"}])):
        model_folder = Path(resolve_model(ALIAS, quiet=True))
    assert (model_folder / "config.json").is_file()
    for bad in ("os.system", "_private", ""):
        with pytest.raises(ValueError, match="converter_function must be a public function name"):
            Catalogue([{**viperx.entry, "converter_function": bad}])


# -- MossFormer2 (issue 19): ModelScope 8 kHz and ClearerVoice 16 kHz ---------------------------------

MOSSFORMER2_8K_ID = "damo/speech_mossformer2_separation_temporal_8k"
CLEARVOICE_REPO = "alibabasglab/MossFormer2_SS_16K"


class MossFormer2Releases:
    """Tiny stand-ins of both MossFormer2 releases, in their layouts, with their test entries."""

    def __init__(self, folder: Path) -> None:
        from demixers.catalogue.entries import MODELSCOPE_ROOT
        from tests.modeling.mossformer2.references import (
            build_clearvoice_reference,
            build_modelscope_reference,
            save_modelscope_layout,
        )
        from tests.modeling.mossformer2.test_convert_mossformer2 import SMALL_CLEARVOICE, SMALL_MODELSCOPE
        from tests.modeling.parity_utils import perturb_parameters

        self.modelscope = perturb_parameters(build_modelscope_reference(**SMALL_MODELSCOPE), seed=3)
        release = save_modelscope_layout(self.modelscope, folder / "modelscope", SMALL_MODELSCOPE)
        self.files: dict[str, bytes] = {}
        listing = []
        base = "/api/v1/models/" + MOSSFORMER2_8K_ID
        for name in ("configuration.json", "pytorch_model.pt"):
            data = (release / name).read_bytes()
            self.files[f"{base}/repo?Revision=master&FilePath={name}"] = data
            listing.append({"Path": name, "Sha256": hashlib.sha256(data).hexdigest(), "Size": len(data)})
        self.files[f"{base}/repo/files?Revision=master&Recursive=true"] = json.dumps(
            {"Code": 200, "Data": {"Files": listing}}
        ).encode()
        self.modelscope_entry = _builtin("mossformer2_8k")
        assert self.modelscope_entry["files"][0]["url"].startswith(MODELSCOPE_ROOT + MOSSFORMER2_8K_ID)

        self.clearvoice = perturb_parameters(build_clearvoice_reference(**SMALL_CLEARVOICE), seed=4)
        buffer = io.BytesIO()
        # ClearerVoice's trainer saves the DDP-wrapped weights under "model"
        state = {f"module.{key}": value for key, value in self.clearvoice.state_dict().items()}
        torch.save({"model": state, "epoch": 3}, buffer)
        self.clearvoice_checkpoint = buffer.getvalue()
        entry = _builtin("mossformer2_16k")
        yaml_name = next(iter(entry["inline_files"]))
        released = yaml.safe_load(entry["inline_files"][yaml_name])
        # the built-in entry carries the released yaml verbatim: the test entry the tiny sizes
        entry["inline_files"] = {yaml_name: yaml.safe_dump({**released, **SMALL_CLEARVOICE})}
        self.clearvoice_entry = entry


@pytest.fixture(scope="module")
def mossformer2(tmp_path_factory: pytest.TempPathFactory, hub_server) -> MossFormer2Releases:
    from huggingface_hub import HfApi

    releases = MossFormer2Releases(tmp_path_factory.mktemp("mossformer2"))
    api = HfApi()
    filename = releases.clearvoice_entry["files"][0]["hub"]["filename"]
    api.create_repo(CLEARVOICE_REPO, exist_ok=True)
    api.upload_file(
        path_or_fileobj=releases.clearvoice_checkpoint, path_in_repo=filename, repo_id=CLEARVOICE_REPO
    )
    return releases


def test_mossformer2_aliases_download_verify_convert_and_equal_the_references(
    mossformer2: MossFormer2Releases,
    file_server: LoopbackFileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModel

    from tests.modeling.mossformer2.references import clearvoice_separate, modelscope_separate
    from tests.modeling.parity_utils import relative_max_difference, speech_batch

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("DEMIXERS_MIRROR_URL", file_server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for path, data in mossformer2.files.items():
        file_server.add(path, data)
    file_server.clear_log()
    catalogue = Catalogue([mossformer2.modelscope_entry, mossformer2.clearvoice_entry])
    cases = (
        ("mossformer2_8k", mossformer2.modelscope, modelscope_separate, 8000),
        ("mossformer2_16k", mossformer2.clearvoice, clearvoice_separate, 16000),
    )
    with use_catalogue(catalogue):
        for alias, reference, separate, rate in cases:
            model = AutoModel.from_pretrained(resolve_model(alias, quiet=True)).eval()
            assert model.config.model_type == "mossformer2" and model.config.sampling_rate == rate
            mixture = speech_batch(1009, rate)[:, 0]
            with torch.no_grad():
                ours = model(input_values=mixture).audio_values
            assert relative_max_difference(ours, separate(reference, mixture)) < 1e-5
        # ModelScope: one listing, two files; ClearerVoice came from the Hub
        assert len(file_server.requests) == 3
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        for alias, *_ in cases:
            assert Path(resolve_model(alias)) == converted_path(catalogue[alias])
    assert len(file_server.requests) == 3


def test_the_builtin_mossformer2_entries() -> None:
    catalogue = builtin_catalogue()
    eight = catalogue["mossformer2_8k"]
    assert (eight.family, eight.converter, eight.converter_function, eight.sampling_rate) == (
        "mossformer2",
        "modelscope-mossformer2",
        "convert_modelscope_checkpoint",
        8000,
    )
    assert [item.path for item in eight.files] == ["configuration.json", "pytorch_model.pt"]
    assert all(item.checksum_from == "modelscope" for item in eight.files)
    sixteen = catalogue["mossformer2_16k"]
    assert (sixteen.converter, sixteen.converter_function, sixteen.sampling_rate) == (
        "clearvoice-mossformer2",
        "convert_clearvoice_checkpoint",
        16000,
    )
    (checkpoint,) = sixteen.files
    assert (checkpoint.hub_repo_id, checkpoint.checksum_from) == (CLEARVOICE_REPO, "hub-lfs")
    assert sixteen.entry_point == checkpoint.path
    # the inline yaml is ClearerVoice 0.1.2's config/inference/MossFormer2_SS_16K.yaml, byte for byte
    (text,) = sixteen.inline_files.values()
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "839fb7cc7eac064552e397172ef2d48fb2762180f3aaba12c04b5899f9edfb00"
    )
