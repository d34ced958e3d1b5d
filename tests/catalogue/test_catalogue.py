"""Official checkpoints by name (issue 17): download with resume, checksum verification, conversion
cache, offline mode, refused releases, concurrent downloads, the commands and publishing.

Releases are built from the reference implementations with random weights (`releases.py`), served
by a loopback file server at the original URL paths (reached through ``DEMIXERS_MIRROR_URL``) and by
the suite's loopback Hub; the test catalogue (same schema) carries the checksums of those files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import demixers
from demixers.catalogue import resolve as resolve_module
from demixers.catalogue.download import download_path, effective_url
from demixers.catalogue.resolve import SOURCE_RECORD, converted_path, resolve_model, use_catalogue
from demixers.catalogue.schema import Catalogue, CatalogueEntry
from demixers.cli import main
from tests.catalogue.file_server import LoopbackFileServer
from tests.catalogue.releases import ReleaseSet, build_test_releases
from tests.modeling.common import _BLOCK_DEMIXERS


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, hub_server) -> ReleaseSet:
    from huggingface_hub import HfApi

    built = build_test_releases(tmp_path_factory.mktemp("releases"))
    api = HfApi()
    for repo_id, data in built.hub_files.values():
        api.create_repo(repo_id, exist_ok=True)
        api.upload_file(path_or_fileobj=data, path_in_repo="pytorch_model.bin", repo_id=repo_id)
    return built


@pytest.fixture(scope="module")
def file_server(releases: ReleaseSet) -> Iterator[LoopbackFileServer]:
    server = LoopbackFileServer().start()
    for path, data in releases.files.items():
        server.add(path, data)
    yield server
    server.stop()


@pytest.fixture
def catalogue_env(
    releases: ReleaseSet, file_server: LoopbackFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Catalogue]:
    """A fresh demixers cache, the mirror pointing at the file server, the test catalogue in use."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("DEMIXERS_MIRROR_URL", file_server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    file_server.clear_log()
    with use_catalogue(releases.catalogue()) as catalogue:
        yield catalogue


def _demucs_file_path(releases: ReleaseSet, alias: str, index: int = 0) -> str:
    entry = next(entry for entry in releases.entries if entry["alias"] == alias)
    return "/demucs/" + entry["files"][index]["url"].split("/demucs/", 1)[1]


def _reference_output(models: list[torch.nn.Module], mixture: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return models[0](mixture)


# -- first load, cache reuse -------------------------------------------------------------------------


def test_first_load_downloads_verifies_converts_and_the_second_makes_no_request(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    from transformers import AutoModel

    started = time.perf_counter()
    folder = Path(resolve_model("htdemucs", quiet=True))
    first = time.perf_counter() - started
    assert folder == converted_path(catalogue_env["htdemucs"])
    assert len(file_server.requests) == 1 and file_server.requests[0][0] == "GET"
    record = json.loads((folder / SOURCE_RECORD).read_text())
    served = releases.files[_demucs_file_path(releases, "htdemucs")]
    name = _demucs_file_path(releases, "htdemucs").rsplit("/", 1)[1]
    import hashlib

    assert record["sha256"][name] == hashlib.sha256(served).hexdigest()

    # the converted model is the reference model (demucs' own forward on the same input)
    model = AutoModel.from_pretrained(folder).eval()
    mixture = torch.randn(1, 2, 4410, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(mixture).audio_values
        expected = releases.references["htdemucs"][0](mixture)
    assert float((ours - expected).abs().max() / expected.abs().max()) < 1e-5

    started = time.perf_counter()
    again = resolve_model("htdemucs")
    cached = time.perf_counter() - started
    assert again == str(folder)
    assert len(file_server.requests) == 1  # nothing requested the second time
    print(f"htdemucs (tiny) first load {first:.3f} s, cached {cached * 1000:.2f} ms")


def test_bag_of_two_and_the_models_listing(
    catalogue_env: Catalogue,
    releases: ReleaseSet,
    file_server: LoopbackFileServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith("htdemucs_ft "))
    assert row.split()[1:3] == ["music", "drums,bass,other,vocals"] and row.split()[-1] == "-"
    assert "SDR 9.2 dB (MUSDB18-HQ test)" in row
    assert next(line for line in listing.splitlines() if line.startswith("mdx_q ")).split()[-1] == "refused"

    assert main(["download", "htdemucs_ft", "--quiet"]) == 0
    assert len(file_server.requests) == 2  # one GET per member
    config = json.loads((converted_path(catalogue_env["htdemucs_ft"]) / "config.json").read_text())
    assert config["model_type"] == "demucs_bag" and len(config["models"]) == 2
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("htdemucs_ft "))
    assert row.split()[-1] == "converted"

    assert main(["models", "--json"]) == 0
    row = next(item for item in json.loads(capsys.readouterr().out) if item["alias"] == "htdemucs_ft")
    served = [len(releases.files[_demucs_file_path(releases, "htdemucs_ft", index)]) for index in (0, 1)]
    assert row["size"] == sum(served) and row["cached"] == "converted"

    assert main(["models", "--details"]) == 0
    details = capsys.readouterr().out
    assert "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/f7e0c4bc-" in details
    assert "[sha256 prefix (8 hex)]" in details and "DiffQ" in details


def test_separate_and_the_python_api_load_an_alias(
    catalogue_env: Catalogue, file_server: LoopbackFileServer, tmp_path: Path
) -> None:
    from transformers import pipeline

    audio = np.random.default_rng(0).standard_normal((8820, 2)).astype(np.float32) * 0.1
    soundfile.write(tmp_path / "song.wav", audio, 44100)
    assert (
        main(["separate", str(tmp_path / "song.wav"), "-m", "htdemucs", "-o", str(tmp_path / "out"), "-q"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "out" / "song").iterdir()) == [
        "bass.wav", "drums.wav", "other.wav", "vocals.wav",
    ]  # fmt: skip
    separator = pipeline("audio-source-separation", model=demixers.resolve_model("htdemucs"))
    assert [stem["label"] for stem in separator(str(tmp_path / "song.wav"))] == [
        "drums",
        "bass",
        "other",
        "vocals",
    ]
    assert len(file_server.requests) == 1
    assert demixers.resolve_model("org/some-hub-model") == "org/some-hub-model"  # not an alias: unchanged


# -- integrity -----------------------------------------------------------------------------------------


def test_checksum_mismatch_deletes_the_download_and_names_alias_url_and_digests(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    entry = next(dict(item) for item in releases.entries if item["alias"] == "htdemucs")
    path = _demucs_file_path(releases, "htdemucs")
    wrong = "0" * 64
    entry["files"] = [{"url": entry["files"][0]["url"], "sha256": wrong}]
    with use_catalogue(Catalogue([entry])), pytest.raises(ValueError) as error:
        resolve_model("htdemucs")
    message = str(error.value)
    assert message.startswith("htdemucs: checksum mismatch for ")
    assert f"{file_server.url}{path}" in message and f"expected sha256 {wrong}" in message
    import hashlib

    assert f"got {hashlib.sha256(releases.files[path]).hexdigest()}" in message
    final = download_path(CatalogueEntry.from_dict(entry).files[0])
    assert not final.exists() and not final.with_name(final.name + ".part").exists()
    assert not converted_path(CatalogueEntry.from_dict(entry)).exists()


def test_a_file_that_does_not_match_the_published_prefix_is_deleted(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    path = _demucs_file_path(releases, "htdemucs")
    prefix = path.rsplit("-", 1)[1].removesuffix(".th")
    tampered = bytearray(releases.files[path])
    tampered[len(tampered) // 2] ^= 0xFF  # one byte changed on the server
    file_server.add(path, bytes(tampered))
    try:
        with pytest.raises(ValueError, match=rf"expected sha256 {prefix}\.\.\. \(published prefix\), got "):
            resolve_model("htdemucs", quiet=True)
    finally:
        file_server.add(path, releases.files[path])
    final = download_path(catalogue_env["htdemucs"].files[0])
    assert not final.exists() and not final.with_name(final.name + ".part").exists()
    resolve_model("htdemucs", quiet=True)  # the next attempt downloads again and succeeds
    assert len(file_server.requests_for(path)) == 2


def test_a_truncated_download_is_resumed_with_a_range_request(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    path = _demucs_file_path(releases, "htdemucs")
    size = len(releases.files[path])
    file_server.cut_after[path] = size // 3
    resolve_model("htdemucs", quiet=True)
    requests = file_server.requests_for(path)
    assert [entry[2] for entry in requests] == [None, f"bytes={size // 3}-"]


def test_a_partial_file_left_by_an_interrupted_run_is_resumed(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    path = _demucs_file_path(releases, "htdemucs")
    data = releases.files[path]
    final = download_path(catalogue_env["htdemucs"].files[0])
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(data[:1000])
    resolve_model("htdemucs", quiet=True)
    assert [entry[2] for entry in file_server.requests_for(path)] == ["bytes=1000-"]
    assert final.read_bytes() == data


def test_concurrent_downloads_of_one_alias_share_one_download(
    catalogue_env: Catalogue, file_server: LoopbackFileServer
) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(resolve_model("htdemucs_ft", quiet=True))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(set(results)) == 1 and len(results) == 4
    assert len(file_server.requests) == 2  # each member fetched once, not once per thread
    leftovers = [p.name for p in Path(results[0]).parent.iterdir() if p.name.startswith(".staging-")]
    assert leftovers == []


def test_concurrent_processes_downloading_one_file_do_not_corrupt_the_cache(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    path = _demucs_file_path(releases, "htdemucs")
    release_file = catalogue_env["htdemucs"].files[0]
    spec = {"url": release_file.url, "sha256_prefix": release_file.sha256_prefix}
    script = textwrap.dedent(
        """
        import json, sys
        from demixers.catalogue.download import fetch_url_file
        from demixers.catalogue.schema import ReleaseFile

        print("PATH", fetch_url_file("htdemucs", ReleaseFile.from_dict("htdemucs", json.loads(sys.argv[1]))))
        """
    )
    file_server.pause_midway[path] = 1.5  # the first download is still running when the others start
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        file_server.pause_midway.pop(path, None)
    assert all(process.returncode == 0 for process in processes), [err.decode()[-2000:] for _, err in outputs]
    paths = {out.decode().split("PATH ", 1)[1].strip() for out, _ in outputs}
    assert len(paths) == 1
    final = Path(paths.pop())
    assert final.read_bytes() == releases.files[path]
    assert len(file_server.requests_for(path)) == 1  # the others waited for the lock, then used the file
    assert not final.with_name(final.name + ".part").exists()


# -- offline, refused -----------------------------------------------------------------------------------


def test_offline_uses_the_cache_or_fails_with_one_line_naming_the_alias(
    catalogue_env: Catalogue, file_server: LoopbackFileServer, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"^htdemucs is not in the cache and HF_HUB_OFFLINE is set"):
        resolve_model("htdemucs")
    assert main(["separate", "x.wav", "-m", "htdemucs"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "htdemucs is not in the cache" in error
    assert file_server.requests == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    folder = resolve_model("htdemucs", quiet=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("htdemucs") == folder
    assert len(file_server.requests) == 1


def test_offline_converts_from_downloaded_files(
    catalogue_env: Catalogue, file_server: LoopbackFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(resolve_model("htdemucs", quiet=True))
    import shutil

    shutil.rmtree(folder)  # downloads kept, conversion gone (e.g. a new converter version)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("htdemucs") == str(folder) and (folder / "config.json").is_file()
    assert len(file_server.requests) == 1


def test_a_diffq_release_is_refused_with_the_reason(
    catalogue_env: Catalogue, file_server: LoopbackFileServer, capsys
) -> None:
    with pytest.raises(
        ValueError, match=r"^mdx_q cannot be loaded: DiffQ-quantized release.*use the unquantized"
    ):
        resolve_model("mdx_q")
    assert main(["download", "mdx_q"]) == 1
    assert "mdx_q cannot be loaded: DiffQ" in capsys.readouterr().err
    assert main(["evaluate", "-m", "mdx_q", "--dataset", "no-such-dataset"]) == 2  # evaluate resolves too
    assert "mdx_q cannot be loaded: DiffQ" in capsys.readouterr().err
    assert main(["download", "htdemucs_fx"]) == 2  # unknown alias: a usage error with a suggestion
    assert "did you mean htdemucs_ft" in capsys.readouterr().err
    assert file_server.requests == []


# -- other hosts ------------------------------------------------------------------------------------------


def test_hub_hosted_release_is_verified_against_the_hub_lfs_digest(
    catalogue_env: Catalogue, releases: ReleaseSet, hub_server
) -> None:
    from transformers import AutoModel

    folder = resolve_model("conv_tasnet_libri2mix_8k", quiet=True)
    model = AutoModel.from_pretrained(folder).eval()
    mixture = torch.randn(1, 1, 800, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = releases.references["conv_tasnet_libri2mix_8k"](mixture[:, 0])
        ours = model(mixture).audio_values[:, :, 0]
    assert float((ours - expected).abs().max() / expected.abs().max()) < 1e-5
    before = len(hub_server.requests_matching(contains="ConvTasNet_Libri2Mix_sepclean_8k"))
    assert resolve_model("conv_tasnet_libri2mix_8k") == folder
    assert len(hub_server.requests_matching(contains="ConvTasNet_Libri2Mix_sepclean_8k")) == before

    entry = next(dict(item) for item in releases.entries if item["alias"] == "conv_tasnet_libri2mix_8k")
    entry["files"] = [{**entry["files"][0], "sha256": "f" * 64}]
    with (
        use_catalogue(Catalogue([entry])),
        pytest.raises(ValueError, match="checksum mismatch for hf://JorisCos"),
    ):
        resolve_model("conv_tasnet_libri2mix_8k")


def test_modelscope_release_is_verified_against_modelscope_listing(
    catalogue_env: Catalogue, releases: ReleaseSet, file_server: LoopbackFileServer
) -> None:
    from transformers import AutoModel

    folder = resolve_model("mossformer_8k", quiet=True)
    model = AutoModel.from_pretrained(folder)
    assert model.config.model_type == "mossformer" and model.config.sampling_rate == 8000
    listing = [entry for entry in file_server.requests if "/repo/files?" in entry[1]]
    assert len(listing) == 1 and len(file_server.requests) == 5  # one listing, 4 files

    # a file that is not what ModelScope's listing says is deleted
    path = next(p for p in releases.files if p.endswith("FilePath=encoder.bin"))
    file_server.add(path, releases.files[path] + b"tampered")
    try:
        resolve_module.shutil.rmtree(Path(os.environ["HF_HOME"]))
        with pytest.raises(ValueError, match=r"mossformer_8k: checksum mismatch for .*FilePath=encoder.bin"):
            resolve_model("mossformer_8k", quiet=True)
    finally:
        file_server.add(path, releases.files[path])


# -- publish --------------------------------------------------------------------------------------------


def test_publish_pushes_weights_code_and_card_to_the_hub(catalogue_env: Catalogue, hub_server) -> None:
    from huggingface_hub import HfApi

    assert main(["publish", "demixers-official", "htdemucs_ft", "-q"]) == 0
    files = set(HfApi().list_repo_files("demixers-official/htdemucs_ft"))
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert SOURCE_RECORD not in files and any(name.startswith("modeling_") for name in files)
    config = json.loads(
        Path(HfApi().hf_hub_download("demixers-official/htdemucs_ft", "config.json")).read_text()
    )
    assert "auto_map" in config and "audio-source-separation" in config["custom_pipelines"]


@pytest.mark.slow  # a subprocess importing torch and transformers (about 30 s on 2 busy cores)
def test_publish_dry_run_writes_a_repo_plain_transformers_loads(
    catalogue_env: Catalogue, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "repos"
    assert main(["publish", "demixers-official", "htdemucs", "--dry-run", str(out), "-q"]) == 0
    repo = out / "htdemucs"
    names = sorted(path.name for path in repo.iterdir())
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(names)
    assert SOURCE_RECORD not in names and any(name.startswith("modeling_") for name in names)
    card = (repo / "README.md").read_text()
    for expected in (
        "license: mit",
        "Simon Rouard, Francisco Massa, Alexandre Défossez",
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-",
        "Conversion parity:",
        "```bibtex\n@",  # the architecture's citation
        'model="demixers-official/htdemucs", trust_remote_code=True',
    ):
        assert expected in card, expected
    assert main(["publish", "demixers-official", "htdemucs", "--dry-run", str(out)]) == 2  # exists

    script = _BLOCK_DEMIXERS + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(repo)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(torch.ones(1, 2, 4410) * 0.1).audio_values
        print("SHAPE", tuple(out.shape))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHAPE (1, 4, 2, 4410)" in result.stdout


# -- schema ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"files": [{"url": "https://example.org/a.th"}]}, "has no checksum"),
        ({"files": [{"url": "https://example.org/a.th", "sha256_prefix": "xyz"}]}, "sha256_prefix must be"),
        ({"files": [{"url": "file:///etc/passwd", "sha256": "0" * 64}]}, "must be http"),
        ({"files": [{"url": "https://example.org/a.th", "path": "../a.th", "sha256": "0" * 64}]}, "relative"),
        ({"entry_point": "missing.yaml"}, "entry_point"),
        ({"colour": "blue"}, "unknown field"),
        ({"task": "speach"}, "task must be one of"),
    ],
)
def test_invalid_entries_are_refused_naming_the_alias(change: dict, message: str) -> None:
    entry = {
        "alias": "broken",
        "family": "htdemucs",
        "task": "music",
        "sources": ["drums"],
        "sampling_rate": 44100,
        "converter": "demucs",
        "license": "mit",
        "files": [{"url": "https://example.org/a.th", "sha256": "0" * 64}],
        **change,
    }
    with pytest.raises(ValueError, match=message) as error:
        Catalogue([entry])
    assert "broken" in str(error.value)


def test_the_builtin_catalogue_is_valid_and_names_real_converters() -> None:
    from demixers.catalogue.resolve import builtin_catalogue
    from demixers.modeling.convert_cli import CONVERTERS

    catalogue = builtin_catalogue()
    for alias in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra", "tasnet"):
        assert catalogue[alias].refused is None and catalogue[alias].files
    for alias in ("mdx_q", "mdx_extra_q", "demucs_quantized"):
        assert "DiffQ" in str(catalogue[alias].refused)
    assert all(entry.converter in CONVERTERS for entry in catalogue)
    assert len(catalogue["htdemucs_ft"].files) == 4
    assert catalogue["htdemucs_ft"].files[0].url == (
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/f7e0c4bc-ba3fe64a.th"
    )
    assert catalogue["htdemucs_ft"].files[0].sha256_prefix == "ba3fe64a"


def test_mirror_url_replaces_only_scheme_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://modelscope.cn/api/v1/models/damo/x/repo?Revision=master&FilePath=encoder.bin"
    monkeypatch.delenv("DEMIXERS_MIRROR_URL", raising=False)
    assert effective_url(url) == url
    monkeypatch.setenv("DEMIXERS_MIRROR_URL", "http://127.0.0.1:9/mirror/")
    assert (
        effective_url(url)
        == "http://127.0.0.1:9/mirror/api/v1/models/damo/x/repo?Revision=master&FilePath=encoder.bin"
    )
    monkeypatch.setenv("DEMIXERS_MIRROR_URL", "ftp://mirror")
    with pytest.raises(ValueError, match="DEMIXERS_MIRROR_URL must be"):
        effective_url(url)


def test_a_new_converter_version_gives_a_new_cache_key(
    catalogue_env: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = catalogue_env["htdemucs"]
    before = converted_path(entry)
    monkeypatch.setattr(resolve_module, "converter_version", lambda name: "changed")
    assert converted_path(entry) != before and converted_path(entry).parent == before.parent
