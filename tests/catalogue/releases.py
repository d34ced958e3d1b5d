"""Test releases built from the reference implementations (random weights, tiny configs), named
and placed like the originals, and a test catalogue (same schema as the built-in one) whose
checksums are those of these files.

* demucs (``demucs`` package): tiny HTDemucs models saved as demucs saves them
  (``{signature}-{sha256[:8]}.th`` packages), under ``/demucs/hybrid_transformer/`` as on
  dl.fbaipublicfiles.com; ``htdemucs`` (one model) and ``htdemucs_ft`` (a bag of two, one per stem
  pair) use the original signatures and the built-in entries' bag yamls' shape;
* asteroid: a tiny ``asteroid.models.ConvTasNet`` package (``pytorch_model.bin``) for the Hub repo
  ``JorisCos/ConvTasNet_Libri2Mix_sepclean_8k`` (uploaded to the suite's loopback Hub);
* ModelScope: a tiny MossFormer in the release's layout (configuration.json, encoder.bin,
  decoder.bin, masknet.bin) served at ModelScope's file API paths, with its file listing (the
  SHA-256 the catalogue checks).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from demixers.catalogue.entries import BUILTIN_ENTRIES, DEMUCS_ROOT, MODELSCOPE_ROOT
from demixers.catalogue.schema import Catalogue

SOURCES = ["drums", "bass", "other", "vocals"]
MOSSFORMER_ID = "damo/speech_mossformer_separation_temporal_8k"
CONV_TASNET_REPO = "JorisCos/ConvTasNet_Libri2Mix_sepclean_8k"


@dataclass
class ReleaseSet:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path (with query) -> bytes
    hub_files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # alias -> (repo, bytes)
    entries: list[dict[str, Any]] = field(default_factory=list)
    references: dict[str, Any] = field(default_factory=dict)  # alias -> reference model(s)

    def catalogue(self) -> Catalogue:
        return Catalogue(self.entries)


def _demucs_th(model: torch.nn.Module, signature: str) -> tuple[str, bytes]:
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": type(model),
        "args": args,
        "kwargs": kwargs,
        "state": {key: value.detach().clone() for key, value in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    data = buffer.getvalue()
    return f"{signature}-{hashlib.sha256(data).hexdigest()[:8]}.th", data


def _tiny_htdemucs(seed: int) -> torch.nn.Module:
    from demucs.htdemucs import HTDemucs

    from tests.modeling.parity_utils import perturb_parameters

    torch.manual_seed(seed)
    model = HTDemucs(
        SOURCES,
        channels=8,
        depth=2,
        nfft=64,
        bottom_channels=8,
        t_layers=1,
        t_heads=2,
        segment=Fraction(1, 10),
    )
    return perturb_parameters(model, seed=seed).eval()


def _builtin(alias: str) -> dict[str, Any]:
    return next(dict(entry) for entry in BUILTIN_ENTRIES if entry["alias"] == alias)


def _add_demucs(releases: ReleaseSet, alias: str, signatures: list[str], bag_yaml: str) -> None:
    entry = _builtin(alias)
    files, models = [], []
    for index, signature in enumerate(signatures):
        model = _tiny_htdemucs(seed=index + len(releases.files))
        name, data = _demucs_th(model, signature)
        url = f"{DEMUCS_ROOT}hybrid_transformer/{name}"
        releases.files["/demucs/hybrid_transformer/" + name] = data
        files.append({"url": url, "sha256_prefix": name.rsplit("-", 1)[1][:-3]})
        models.append(model)
    entry.update(files=files, inline_files={f"{alias}.yaml": bag_yaml}, unverified=[])
    releases.entries.append(entry)
    releases.references[alias] = models


def _add_conv_tasnet(releases: ReleaseSet) -> None:
    import asteroid
    from asteroid.models import ConvTasNet

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ConvTasNet(
            n_src=2, n_blocks=2, n_repeats=1, bn_chan=8, hid_chan=12, skip_chan=8, n_filters=16, kernel_size=8
        ).eval()
    package = {
        "model_name": "ConvTasNet",
        "state_dict": model.get_state_dict(),
        "model_args": model.get_model_args(),
        "infos": {"software_versions": {"asteroid_version": asteroid.__version__}},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    entry = _builtin("conv_tasnet_libri2mix_8k")
    releases.entries.append(entry)
    releases.hub_files[entry["alias"]] = (CONV_TASNET_REPO, buffer.getvalue())
    releases.references[entry["alias"]] = model


def _add_mossformer(releases: ReleaseSet, folder: Path) -> None:
    from tests.modeling.mossformer.reference_modelscope import build_reference_model, save_official_layout
    from tests.modeling.mossformer.test_convert_mossformer import SMALL

    model = build_reference_model(**SMALL)
    save_official_layout(model, folder, SMALL)
    entry = _builtin("mossformer_8k")
    listing = []
    base = "/api/v1/models/" + MOSSFORMER_ID
    for name in ("configuration.json", "encoder.bin", "decoder.bin", "masknet.bin"):
        data = (folder / name).read_bytes()
        releases.files[f"{base}/repo?Revision=master&FilePath={name}"] = data
        listing.append({"Path": name, "Sha256": hashlib.sha256(data).hexdigest(), "Size": len(data)})
    releases.files[f"{base}/repo/files?Revision=master&Recursive=true"] = json.dumps(
        {"Code": 200, "Data": {"Files": listing}}
    ).encode()
    assert entry["files"][0]["url"].startswith(MODELSCOPE_ROOT + MOSSFORMER_ID)
    releases.entries.append(entry)
    releases.references[entry["alias"]] = model


def build_test_releases(folder: Path) -> ReleaseSet:
    releases = ReleaseSet()
    _add_demucs(releases, "htdemucs", ["955717e8"], "models: ['955717e8']\n")
    _add_demucs(
        releases,
        "htdemucs_ft",
        ["f7e0c4bc", "d12395a8"],
        "models: ['f7e0c4bc', 'd12395a8']\nweights: [[1., 1., 0., 0.], [0., 0., 1., 1.]]\n",
    )
    _add_conv_tasnet(releases)
    _add_mossformer(releases, folder / "mossformer")
    releases.entries.append(_builtin("mdx_q"))  # refused: DiffQ
    releases.entries.append(_builtin("dttnet_vocals"))  # refused: no direct link
    return releases
