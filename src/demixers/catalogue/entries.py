"""The built-in catalogue: the official releases the families support (data only).

Where each value comes from (read offline unless marked in an entry's ``unverified``):

* **demucs**: file names and URLs from the installed ``demucs`` 4.1.0 package's ``remote/files.txt``
  (``ROOT_URL = https://dl.fbaipublicfiles.com/demucs/`` in ``demucs/pretrained.py``), bag definitions
  copied verbatim from its ``remote/*.yaml``; the v2 names (``tasnet``, ``demucs``...) from demucs 2.x's
  ``pretrained.py`` (``ROOT = .../demucs/v3.0/``, ``PRETRAINED_MODELS``), read from a stored copy of
  that public file. The checksum is the SHA-256 prefix the file name publishes (``{sig}-{prefix}.th``,
  what demucs itself checks). The same releases also live on the Hub (``adefossez/HTDemucs``...) in
  safetensors, at revisions that could not be pinned offline, so the catalogue uses the legacy files.
* **asteroid**: Hub ids and published scores from the model cards (read from stored copies of the
  public cards); revisions are not pinned offline (``main``) and the checksum is the Hub's LFS SHA-256.
* **ModelScope MossFormer**: model id from the ModelScope release; the checksum is the SHA-256 that
  ModelScope's file listing publishes, the revision (``master``) is not pinned offline.
* **DTTNet**: the authors publish checkpoints only in mega.nz and Baidu Pan folders (their README),
  which have no direct download URL: listed, refused with that reason.

* **MossFormer2**: ModelScope's 8 kHz release (``configuration.json`` + ``pytorch_model.pt``, checked
  against ModelScope's file listing, ``master`` not pinned offline) and ClearerVoice-Studio's 16 kHz
  checkpoint on the Hub (``alibabasglab/MossFormer2_SS_16K``, LFS digest of ``main``), whose inference
  yaml ships in the ``clearvoice`` 0.1.2 wheel and is carried verbatim as an inline file.
* **BS-/Mel-Band RoFormer** (community checkpoints trained with Music-Source-Separation-Training,
  "MSST"): weight URLs, config URLs and the published SDRs from MSST's ``docs/pretrained_models.md``
  (a stored snapshot at commit ``ccc011ab``); the same files audio-separator 0.47.1 downloads
  (``TRvlvr/model_repo`` release ``all_public_uvr_models``, its ``models.json``). The configs are
  pinned to the MSST commit that last changed them, with the SHA-256 computed from that snapshot.
  Weights on GitHub releases are checked against the ``digest`` GitHub's release API publishes
  (read at download time: not verifiable offline); weights on the Hub against the LFS SHA-256 of
  ``main`` (not pinned offline). The releases state no license.

New families add entries here that name their converter.
"""

from __future__ import annotations

from typing import Any

DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/"
DEMUCS_SOURCES = ["drums", "bass", "other", "vocals"]
DEMUCS_HOMEPAGE = "https://github.com/facebookresearch/demucs"
DEMUCS_V4_AUTHORS = "Simon Rouard, Francisco Massa, Alexandre Défossez (Meta AI)"
DEMUCS_V3_AUTHORS = "Alexandre Défossez (Meta AI)"
DEMUCS_V2_AUTHORS = "Alexandre Défossez, Nicolas Usunier, Léon Bottou, Francis Bach (Meta AI / INRIA)"
DEMUCS_PARITY = (
    "outputs of the converted model equal the demucs package's within a relative 1e-5 on random "
    "weights (tests/modeling/demucs/test_parity_demucs.py); `demixers separate` reproduces "
    "`demucs.separate` within a relative 6.0e-7 (tests/pipelines/test_demucs_separate_parity.py)"
)
DIFFQ_REASON = (
    "DiffQ-quantized release: its packed weights cannot be expanded exactly without DiffQ; "
    "use the unquantized release {instead} instead"
)

# remote/files.txt: the file of every signature, under its root
DEMUCS_FILES: dict[str, str] = {
    **{
        name.split("-")[0]: "mdx_final/" + name
        for name in (
            "0d19c1c6-0f06f20e.th", "5d2d6c55-db83574e.th", "7d865c68-3d5dd56b.th", "7ecf8ec1-70f50cc9.th",
            "a1d90b5c-ae9d2452.th", "c511e2ab-fe698775.th", "cfa93e08-61801ae1.th", "e51eebcc-c1b80bdd.th",
            "6b9c2ca1-3fd82607.th", "b72baf4e-8778635e.th", "42e558d4-196e0e1b.th", "305bc58f-18378783.th",
            "14fc6a69-a89dd0ee.th", "464b36d7-e5a9386e.th", "7fd6ef75-a905dd85.th", "83fc094f-4a16d450.th",
            "1ef250f1-592467ce.th", "902315c2-b39ce9c9.th", "9a6b4851-03af0aa6.th", "fa0cb7f9-100d8bf4.th",
        )
    },
    **{
        name.split("-")[0]: "hybrid_transformer/" + name
        for name in (
            "955717e8-8726e21a.th", "f7e0c4bc-ba3fe64a.th", "d12395a8-e57c48e6.th", "92cfc3b6-ef3bcb9c.th",
            "04573f0d-f3cf25b2.th", "75fc33f5-1941ce65.th", "5c90dfd2-34c22ccb.th",
        )
    },
}  # fmt: skip

# remote/<name>.yaml, verbatim
DEMUCS_BAGS: dict[str, str] = {
    "htdemucs": "models: ['955717e8']\n",
    "htdemucs_ft": (
        "models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\n"
        "weights: [\n  [1., 0., 0., 0.],\n  [0., 1., 0., 0.],\n  [0., 0., 1., 0.],\n  [0., 0., 0., 1.],\n]"
    ),
    "htdemucs_6s": "models: ['5c90dfd2']\n",
    "hdemucs_mmi": "models: ['75fc33f5']\nsegment: 44\n",
    "mdx": (
        "models: ['0d19c1c6', '7ecf8ec1', 'c511e2ab', '7d865c68']\n"
        "weights: [\n  [1., 1., 0., 0.],\n  [0., 1., 0., 0.],\n  [1., 0., 1., 1.],\n  [1., 0., 1., 1.],\n]\n"
        "segment: 44\n"
    ),
    "mdx_extra": "models: ['e51eebcc', 'a1d90b5c', '5d2d6c55', 'cfa93e08']\nsegment: 44",
    "mdx_q": (
        "models: ['6b9c2ca1', 'b72baf4e', '42e558d4', '305bc58f']\n"
        "weights: [\n  [1., 1., 0., 0.],\n  [0., 1., 0., 0.],\n  [1., 0., 1., 1.],\n  [1., 0., 1., 1.],\n]\n"
        "segment: 44\n"
    ),
    "mdx_extra_q": "models: ['83fc094f', '464b36d7', '14fc6a69', '7fd6ef75']\nsegment: 44\n",
    "repro_mdx_a": "models: ['9a6b4851', '1ef250f1', 'fa0cb7f9', '902315c2']\nsegment: 44\n",
    "repro_mdx_a_hybrid_only": "models: ['fa0cb7f9', '902315c2', 'fa0cb7f9', '902315c2']\nsegment: 44\n",
    "repro_mdx_a_time_only": "models: ['9a6b4851', '9a6b4851', '1ef250f1', '1ef250f1']\nsegment: 44\n",
}


def _bag_signatures(text: str) -> list[str]:
    first = text.split("\n", 1)[0]  # "models: ['a', 'b']"
    return [item.strip(" '") for item in first.split("[", 1)[1].rstrip("]").split(",")]


def demucs_bag_entry(
    alias: str,
    *,
    family: str,
    authors: str,
    description: str,
    sources: list[str] = DEMUCS_SOURCES,
    score: dict[str, Any] | None = None,
    refused: str | None = None,
    unverified: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An entry for a demucs release defined by a bag yaml of the demucs package."""
    files = []
    for signature in dict.fromkeys(_bag_signatures(DEMUCS_BAGS[alias])):  # a bag may repeat a member
        relative = DEMUCS_FILES[signature]
        prefix = relative.rsplit("-", 1)[1].removesuffix(".th")
        files.append({"url": DEMUCS_ROOT + relative, "sha256_prefix": prefix})
    return {
        "alias": alias,
        "family": family,
        "task": "music",
        "sources": sources,
        "sampling_rate": 44100,
        "converter": "demucs",
        "files": files,
        "inline_files": {f"{alias}.yaml": DEMUCS_BAGS[alias]},
        "entry_point": f"{alias}.yaml",
        "license": "mit",
        "authors": authors,
        "homepage": DEMUCS_HOMEPAGE,
        "description": description,
        "score": score,
        "parity": DEMUCS_PARITY,
        "refused": refused,
        "unverified": list(unverified),
    }


def _musdb_sdr(value: float) -> dict[str, Any]:
    return {"metric": "SDR", "value": value, "dataset": "MUSDB18-HQ test", "reference": "demucs README"}


DEMUCS_ENTRIES: list[dict[str, Any]] = [
    demucs_bag_entry(
        "htdemucs",
        family="htdemucs",
        authors=DEMUCS_V4_AUTHORS,
        description="Hybrid Transformer Demucs (v4), the demucs default: 4 stems, trained on MUSDB18-HQ "
        "plus 800 extra songs.",
        score=_musdb_sdr(9.0),
        unverified=("score",),
    ),
    demucs_bag_entry(
        "htdemucs_ft",
        family="demucs_bag",
        authors=DEMUCS_V4_AUTHORS,
        description="HTDemucs fine-tuned per source: a bag of 4 models, each kept for one stem "
        "(4x slower than htdemucs, a little better).",
        score=_musdb_sdr(9.2),
        unverified=("score",),
    ),
    demucs_bag_entry(
        "htdemucs_6s",
        family="htdemucs",
        authors=DEMUCS_V4_AUTHORS,
        description="Experimental 6-stem HTDemucs (adds guitar and piano; piano is of low quality).",
        sources=["drums", "bass", "other", "vocals", "guitar", "piano"],
    ),
    demucs_bag_entry(
        "hdemucs_mmi",
        family="hdemucs",
        authors=DEMUCS_V3_AUTHORS,
        description="Hybrid Demucs (v3) retrained on MUSDB18-HQ plus extra data.",
    ),
    demucs_bag_entry(
        "mdx",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="The MDX 2021 track A winner: a bag of 2 hybrid and 2 waveform Demucs, trained on "
        "MUSDB18-HQ only.",
        score={
            "metric": "SDR",
            "value": 7.33,
            "dataset": "MDX 2021 hidden set",
            "reference": "adefossez/mdx21_demucs",
        },
        unverified=("score",),
    ),
    demucs_bag_entry(
        "mdx_extra",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="The MDX 2021 track B runner-up: a bag of 4 Hybrid Demucs trained with extra data.",
        score={
            "metric": "SDR",
            "value": 8.11,
            "dataset": "MDX 2021 hidden set",
            "reference": "adefossez/mdx21_demucs",
        },
        unverified=("score",),
    ),
    demucs_bag_entry(
        "mdx_q",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="DiffQ-quantized version of mdx.",
        refused=DIFFQ_REASON.format(instead="mdx"),
    ),
    demucs_bag_entry(
        "mdx_extra_q",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="DiffQ-quantized version of mdx_extra.",
        refused=DIFFQ_REASON.format(instead="mdx_extra"),
    ),
    demucs_bag_entry(
        "repro_mdx_a",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="Reproduction of the MDX 2021 track A submission (2 hybrid + 2 waveform models).",
    ),
    demucs_bag_entry(
        "repro_mdx_a_hybrid_only",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="repro_mdx_a, hybrid models only.",
    ),
    demucs_bag_entry(
        "repro_mdx_a_time_only",
        family="demucs_bag",
        authors=DEMUCS_V3_AUTHORS,
        description="repro_mdx_a, waveform models only.",
    ),
]

DEMUCS_V2_ROOT = DEMUCS_ROOT + "v3.0/"
V2_STATE_DICT_REASON = (
    "the demucs 2.x `{name}` release is a bare state dict (demucs 2.x rebuilt the model in code), "
    "which the demucs converter does not read: it needs demucs>=3 model packages; use htdemucs or "
    "mdx_extra"
)


def _v2_entry(name: str, checksum: str, **fields: Any) -> dict[str, Any]:
    return {
        "alias": name,
        "family": fields.pop("family", "demucs"),
        "task": "music",
        "sources": DEMUCS_SOURCES,
        "sampling_rate": 44100,
        "converter": fields.pop("converter", "demucs"),
        "files": [{"url": f"{DEMUCS_V2_ROOT}{name}-{checksum}.th", "sha256_prefix": checksum}],
        "entry_point": f"{name}-{checksum}.th",
        "license": "mit",
        "authors": DEMUCS_V2_AUTHORS,
        "homepage": DEMUCS_HOMEPAGE + "/tree/v2",
        **fields,
    }


DEMUCS_V2_ENTRIES: list[dict[str, Any]] = [
    _v2_entry(
        "tasnet",
        "beb46fac",
        family="conv_tasnet",
        converter="demucs-tasnet",
        description="Conv-TasNet for music (demucs 2.x), trained on MUSDB18.",
        parity="outputs equal demucs 2.x's ConvTasNet within 1e-5 of the output scale "
        "(tests/modeling/conv_tasnet/test_convert_conv_tasnet_demucs.py)",
    ),
    _v2_entry(
        "tasnet_extra",
        "df3777b2",
        family="conv_tasnet",
        converter="demucs-tasnet",
        description="Conv-TasNet for music (demucs 2.x), trained on MUSDB18 plus 150 extra songs.",
        parity="outputs equal demucs 2.x's ConvTasNet within 1e-5 of the output scale "
        "(tests/modeling/conv_tasnet/test_convert_conv_tasnet_demucs.py)",
    ),
    _v2_entry(
        "demucs",
        "e07c671f",
        description="Waveform Demucs (v2), trained on MUSDB18.",
        refused=V2_STATE_DICT_REASON.format(name="demucs"),
    ),
    _v2_entry(
        "demucs_extra",
        "3646af93",
        description="Waveform Demucs (v2), trained on MUSDB18 plus 150 extra songs.",
        refused=V2_STATE_DICT_REASON.format(name="demucs_extra"),
    ),
    _v2_entry(
        "demucs48_hq",
        "28a1282c",
        description="Waveform Demucs (v2), 48 channels, trained on MUSDB18-HQ.",
        refused=V2_STATE_DICT_REASON.format(name="demucs48_hq"),
    ),
    _v2_entry(
        "demucs_quantized",
        "07afea75",
        description="DiffQ-quantized waveform Demucs (v2).",
        refused=DIFFQ_REASON.format(instead="htdemucs"),
    ),
]

ASTEROID_PARITY = "outputs equal asteroid's within a relative 1e-5 on random weights ({test})"
CONV_TASNET_PARITY = ASTEROID_PARITY.format(
    test="tests/modeling/conv_tasnet/test_parity_asteroid_conv_tasnet.py"
)
DPRNN_PARITY = ASTEROID_PARITY.format(test="tests/modeling/dprnn_tasnet/test_parity_asteroid_dprnn_tasnet.py")


def _asteroid_entry(
    alias: str, repo_id: str, *, family: str, converter: str, rate: int, sources: int, **fields: Any
) -> dict[str, Any]:
    return {
        "alias": alias,
        "family": family,
        "task": "speech",
        "sources": [f"speaker_{index + 1}" for index in range(sources)],
        "sampling_rate": rate,
        "converter": converter,
        "files": [
            {
                "hub": {"repo_id": repo_id, "revision": "main", "filename": "pytorch_model.bin"},
                "checksum_from": "hub-lfs",
            }
        ],
        "entry_point": "pytorch_model.bin",
        "license": "cc-by-sa-4.0",
        "homepage": f"https://huggingface.co/{repo_id}",
        "parity": CONV_TASNET_PARITY if family == "conv_tasnet" else DPRNN_PARITY,
        "unverified": ["revision (main is not pinned offline)"],
        **fields,
    }


ASTEROID_ENTRIES: list[dict[str, Any]] = [
    _asteroid_entry(
        "conv_tasnet_libri2mix_8k",
        "JorisCos/ConvTasNet_Libri2Mix_sepclean_8k",
        family="conv_tasnet",
        converter="asteroid-conv-tasnet",
        rate=8000,
        sources=2,
        authors="Joris Cosentino (asteroid)",
        description="asteroid's Conv-TasNet, Libri2Mix sep_clean (min, 8 kHz).",
        score={
            "metric": "SI-SDRi",
            "value": 14.76,
            "dataset": "Libri2Mix min test",
            "reference": "model card",
        },
    ),
    _asteroid_entry(
        "conv_tasnet_libri2mix_16k",
        "JorisCos/ConvTasNet_Libri2Mix_sepclean_16k",
        family="conv_tasnet",
        converter="asteroid-conv-tasnet",
        rate=16000,
        sources=2,
        authors="Joris Cosentino (asteroid)",
        description="asteroid's Conv-TasNet, Libri2Mix sep_clean (min, 16 kHz).",
        score={
            "metric": "SI-SDRi",
            "value": 15.24,
            "dataset": "Libri2Mix min test",
            "reference": "model card",
        },
    ),
    _asteroid_entry(
        "conv_tasnet_libri2mix_noisy_8k",
        "JorisCos/ConvTasNet_Libri2Mix_sepnoisy_8k",
        family="conv_tasnet",
        converter="asteroid-conv-tasnet",
        rate=8000,
        sources=2,
        authors="Joris Cosentino (asteroid)",
        description="asteroid's Conv-TasNet, Libri2Mix sep_noisy (min, 8 kHz): separates noisy mixtures.",
        score={
            "metric": "SI-SDRi",
            "value": 11.94,
            "dataset": "Libri2Mix min test",
            "reference": "model card",
        },
    ),
    _asteroid_entry(
        "dprnn_tasnet_wham_8k",
        "mpariente/DPRNNTasNet-ks2_WHAM_sepclean",
        family="dprnn_tasnet",
        converter="asteroid-dprnn-tasnet",
        rate=8000,
        sources=2,
        authors="Manuel Pariente (asteroid)",
        description="asteroid's DPRNN-TasNet (kernel 2), WHAM! sep_clean (8 kHz); asteroid publishes no "
        "2-speaker Libri2Mix DPRNN.",
        score={
            "metric": "SI-SDRi",
            "value": 19.32,
            "dataset": "WHAM! sep_clean test",
            "reference": "model card",
        },
    ),
    _asteroid_entry(
        "dprnn_tasnet_libri1mix_enh_16k",
        "JorisCos/DPRNNTasNet-ks2_Libri1Mix_enhsingle_16k",
        family="dprnn_tasnet",
        converter="asteroid-dprnn-tasnet",
        rate=16000,
        sources=1,
        authors="Joris Cosentino (asteroid)",
        description="asteroid's DPRNN-TasNet (kernel 2), Libri1Mix enh_single (16 kHz): speech enhancement.",
        score={
            "metric": "SI-SDRi",
            "value": 11.27,
            "dataset": "Libri1Mix min test",
            "reference": "model card",
        },
    ),
]

MODELSCOPE_ROOT = "https://modelscope.cn/api/v1/models/"


def _modelscope_files(model_id: str, names: list[str], revision: str = "master") -> list[dict[str, Any]]:
    return [
        {
            "url": f"{MODELSCOPE_ROOT}{model_id}/repo?Revision={revision}&FilePath={name}",
            "path": name,
            "checksum_from": "modelscope",
        }
        for name in names
    ]


MODELSCOPE_ENTRIES: list[dict[str, Any]] = [
    {
        "alias": "mossformer_8k",
        "family": "mossformer",
        "task": "speech",
        "sources": ["speaker_1", "speaker_2"],
        "sampling_rate": 8000,
        "converter": "modelscope-mossformer",
        "files": _modelscope_files(
            "damo/speech_mossformer_separation_temporal_8k",
            ["configuration.json", "encoder.bin", "decoder.bin", "masknet.bin"],
        ),
        "entry_point": ".",
        "license": "apache-2.0",
        "authors": "Shengkui Zhao, Bin Ma (Alibaba DAMO Academy)",
        "homepage": "https://modelscope.cn/models/damo/speech_mossformer_separation_temporal_8k",
        "description": "MossFormer(L), 2-speaker separation at 8 kHz, trained on WSJ0-2mix.",
        "score": {
            "metric": "SI-SNRi",
            "value": 22.8,
            "dataset": "WSJ0-2mix test",
            "reference": "MossFormer paper",
        },
        "parity": "bit-identical outputs to ModelScope's model (float32, CPU; "
        "tests/modeling/mossformer/test_convert_mossformer.py)",
        "unverified": ["score", "license", "revision (master is not pinned offline)"],
    },
]

DTTNET_ENTRIES: list[dict[str, Any]] = [
    {
        "alias": "dttnet_vocals",
        "family": "dttnet",
        "task": "music",
        "sources": ["vocals", "accompaniment"],
        "sampling_rate": 44100,
        "converter": "dttnet",
        "files": [],
        "license": "unknown",
        "authors": "Junyu Chen, Susmitha Vekkot, Pancham Shukla",
        "homepage": "https://github.com/junyuchen-cjy/DTTNet-Pytorch",
        "description": "DTTNet vocals model (MUSDB18-HQ).",
        "score": {
            "metric": "cSDR",
            "value": 10.12,
            "dataset": "MUSDB18-HQ test",
            "reference": "DTTNet README",
        },
        "refused": "the authors publish the checkpoints only in mega.nz and Baidu Pan folders, which have no "
        "direct download link: download vocals.ckpt by hand, then `demixers convert dttnet vocals.ckpt OUT`",
        "unverified": ["license"],
    },
]

MSST_RAW_ROOT = "https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/"
UVR_RELEASE_ROOT = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
ROFORMER_NOTES = (
    "converted with `demixers convert msst-roformer` (MSST's upstream code where audio-separator 0.47.1 "
    "differs: zero_dc, skip_connection, rotary embeddings); zero_dc is pinned to false: these checkpoints "
    "were trained and scored before MSST added the flag (default true since late 2025)"
)
# The community RoFormer checkpoints predate MSST's `zero_dc` flag (added with default true in late
# 2025): their published scores come from code that kept the DC bin, so their configs pin it off.
ROFORMER_CONVERTER_OPTIONS: dict[str, Any] = {"overrides": {"zero_dc": False}}
ROFORMER_LICENSE = "unknown"  # none of the community releases states a license
# No `citation`: the published card renders the family's BibTeX (model_cards.architectures) already.
BS_ROFORMER_PARITY = (
    "outputs equal MSST's and lucidrains' BSRoformer within 1e-5 of the output scale on perturbed "
    "weights (tests/modeling/bs_roformer/)"
)
MEL_BAND_ROFORMER_PARITY = (
    "outputs equal MSST's and lucidrains' MelBandRoformer within 1e-5 of the output scale on "
    "perturbed weights (tests/modeling/mel_band_roformer/)"
)


def _multisong_sdr(stem: str, value: float) -> dict[str, Any]:
    return {
        "metric": f"SDR {stem}",
        "value": value,
        "dataset": "MVSep Multisong",
        "reference": "MSST docs/pretrained_models.md",
    }


def _msst_config(commit: str, path: str, sha256: str, size: int) -> dict[str, Any]:
    """A config of MSST's repository at the commit that last changed it (digest of that snapshot)."""
    return {"url": f"{MSST_RAW_ROOT}{commit}/{path}", "sha256": sha256, "size": size}


def _release_file_name(item: dict[str, Any]) -> str:
    """The name a file gets in the release folder (as the schema names it by default)."""
    if "path" in item:
        return str(item["path"])
    return str(item["hub"]["filename"]) if "hub" in item else str(item["url"]).rsplit("/", 1)[1]


def _roformer_entry(
    alias: str,
    *,
    family: str,
    checkpoint: dict[str, Any],
    config: dict[str, Any],
    sources: list[str],
    unverified: list[str],
    **fields: Any,
) -> dict[str, Any]:
    checkpoint_name, config_name = _release_file_name(checkpoint), _release_file_name(config)
    bs = family == "bs_roformer"
    return {
        "alias": alias,
        "family": family,
        "task": "music",
        "sources": sources,
        "sampling_rate": 44100,
        "converter": "msst-roformer",
        "converter_options": ROFORMER_CONVERTER_OPTIONS,
        "files": [config, checkpoint],
        "entry_point": [config_name, checkpoint_name],
        "license": ROFORMER_LICENSE,
        "parity": BS_ROFORMER_PARITY if bs else MEL_BAND_ROFORMER_PARITY,
        "notes": ROFORMER_NOTES,
        "unverified": ["license", *unverified],
        **fields,
    }


GITHUB_DIGEST_UNVERIFIED = "sha256 (GitHub's asset digest is read at download time, not pinned offline)"

ROFORMER_ENTRIES: list[dict[str, Any]] = [
    _roformer_entry(
        "bs_roformer_viperx_1297",
        family="bs_roformer",
        checkpoint={
            "url": UVR_RELEASE_ROOT + "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            "checksum_from": "github-release",
        },
        config=_msst_config(
            "d9672dac1160ebe9c39aec3d3f3320190e49a5c0",
            "configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
            "42e5635ceab7287b83d9591c9880966f0b61cff26a0a40a29d236bacb32e5f2c",
            1881,
        ),
        sources=["vocals", "other"],
        authors="viperx (trained with MSST's code on lucidrains' BS-RoFormer)",
        homepage="https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/main/docs/pretrained_models.md",
        description="BS-RoFormer vocals model by viperx, epoch 317 (dim 512, depth 12, 62 bands, ~160M "
        "parameters): vocals and the residual; audio-separator's and UVR's default "
        "'BS-Roformer-Viperx-1297'.",
        score=_multisong_sdr("vocals", 10.87),
        unverified=[GITHUB_DIGEST_UNVERIFIED],
    ),
    _roformer_entry(
        "bs_roformer_viperx_1053",
        family="bs_roformer",
        checkpoint={
            "url": UVR_RELEASE_ROOT + "model_bs_roformer_ep_937_sdr_10.5309.ckpt",
            "checksum_from": "github-release",
        },
        config=_msst_config(
            "ce659b894285eedfb28e236aeffca18c90b96ffb",
            "configs/viperx/model_bs_roformer_ep_937_sdr_10.5309.yaml",
            "c9ff80f71867e9b7df08722c3a08a564c68cffcfe1c2c32a004b8153456f8951",
            2351,
        ),
        sources=["other", "vocals"],
        authors="viperx (trained with MSST's code on lucidrains' BS-RoFormer)",
        homepage="https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/main/docs/pretrained_models.md",
        description="BS-RoFormer instrumental ('other') model by viperx, epoch 937 (dim 384, depth 12): "
        "the instrumental and the residual (vocals).",
        score=_multisong_sdr("other", 6.85),
        unverified=[GITHUB_DIGEST_UNVERIFIED],
    ),
    _roformer_entry(
        "mel_band_roformer_viperx_1143",
        family="mel_band_roformer",
        checkpoint={
            "url": UVR_RELEASE_ROOT + "model_mel_band_roformer_ep_3005_sdr_11.4360.ckpt",
            "checksum_from": "github-release",
        },
        config=_msst_config(
            "d9672dac1160ebe9c39aec3d3f3320190e49a5c0",
            "configs/viperx/model_mel_band_roformer_ep_3005_sdr_11.4360.yaml",
            "4e0a24c9078b007caeea94efaad78ed4f29d4f44a80a6aefc4295bff09490314",
            1404,
        ),
        sources=["vocals", "other"],
        authors="viperx (trained with MSST's code on lucidrains' Mel-Band RoFormer)",
        homepage="https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/main/docs/pretrained_models.md",
        description="Mel-Band RoFormer vocals model by viperx, epoch 3005 (dim 384, depth 12): vocals "
        "and the residual.",
        score=_multisong_sdr("vocals", 9.67),
        unverified=[GITHUB_DIGEST_UNVERIFIED],
    ),
    _roformer_entry(
        "mel_band_roformer_kj_vocals",
        family="mel_band_roformer",
        checkpoint={
            "hub": {
                "repo_id": "KimberleyJSN/melbandroformer",
                "revision": "main",
                "filename": "MelBandRoformer.ckpt",
            },
            "checksum_from": "hub-lfs",
        },
        config=_msst_config(
            "4a9f4d74ba06fb271fdc92c5c6528dfb79fc90bd",
            "configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
            "f63f38eb1e6e40a7db0dade714a5ae257555dd8748f4e774eae8679275a81926",
            1721,
        ),
        sources=["vocals", "other"],
        authors="Kimberley Jensen (trained with MSST's code on lucidrains' Mel-Band RoFormer)",
        homepage="https://huggingface.co/KimberleyJSN/melbandroformer",
        description="Mel-Band RoFormer vocals model by Kimberley Jensen (dim 384, depth 6, 60 mel bands, "
        "~228M parameters): vocals and the residual; audio-separator's vocals_mel_band_roformer.ckpt.",
        score=_multisong_sdr("vocals", 10.98),
        unverified=["revision (main is not pinned offline)"],
    ),
]

MOSSFORMER2_AUTHORS = (
    "Shengkui Zhao, Yukun Ma, Chongjia Ni, Chong Zhang, Hao Wang, Trung Hieu Nguyen, Kun Zhou, "
    "Jia Qi Yip, Dianwen Ng, Bin Ma (Alibaba)"
)
MOSSFORMER2_PARITY = (
    "outputs equal ModelScope's m2 and ClearerVoice's mossformer2_ss within 1e-5 of the output scale on "
    "perturbed weights and speech (tests/modeling/mossformer2/test_convert_mossformer2.py)"
)
# ClearerVoice-Studio's inference config, verbatim from the clearvoice 0.1.2 wheel on PyPI
# (clearvoice/config/inference/MossFormer2_SS_16K.yaml): the Hub repo holds only the checkpoint
CLEARVOICE_MOSSFORMER2_SS_16K_YAML = (
    "#!/bin/bash \n"
    "mode: 'inference'\n"
    "use_cuda: 1 # 1 for True, 0 for False\n"
    "num_gpu: 1\n"
    "sampling_rate: 16000\n"
    'network: "MossFormer2_SS_16K"  ##network type\n'
    'checkpoint_dir: "checkpoints/MossFormer2_SS_16K"\n'
    'input_path: "data/wsj0_2mix_16k_fullpath.lst"  # an input dir or input scp file\n'
    '#input_path: "/home/shengkui.zhao/DingTalk_NS/data/webrtc_test_set_20200521_16k/noisy"\n'
    '#input_path: "/mnt/nas_sg/mit_sg/shengkui.zhao/ComplexNN/audio/youtube_testset_16k/noisy_long/'
    'noisy"\n'
    'output_dir: "outputs/MossFormer2_SS_16K_wsj0_2mix" ## output dir to store processed audio\n'
    "\n"
    "# decode parameters\n"
    "one_time_decode_length: 2 #maximum segment length for one-pass decoding (seconds), longer audio "
    "(>3s) will use segmented decoding\n"
    "decode_window: 2 #one-pass decoding length\n"
    "\n"
    "num_spks: 2\n"
    "encoder_kernel_size: 16\n"
    "encoder_embedding_dim: 512\n"
    "mossformer_sequence_dim: 512\n"
    "num_mossformer_layer: 24\n"
)

MOSSFORMER2_ENTRIES: list[dict[str, Any]] = [
    {
        "alias": "mossformer2_8k",
        "family": "mossformer2",
        "task": "speech",
        "sources": ["speaker_1", "speaker_2"],
        "sampling_rate": 8000,
        "converter": "modelscope-mossformer2",
        "converter_function": "convert_modelscope_checkpoint",
        "files": _modelscope_files(
            "damo/speech_mossformer2_separation_temporal_8k", ["configuration.json", "pytorch_model.pt"]
        ),
        "entry_point": ".",
        "license": "apache-2.0",
        "authors": MOSSFORMER2_AUTHORS,
        "homepage": "https://modelscope.cn/models/damo/speech_mossformer2_separation_temporal_8k",
        "description": "MossFormer2 (MossFormer + recurrent gated FSMN, 24 layers, 55.7M parameters), "
        "2-speaker separation at 8 kHz, trained on WSJ0-2mix (ModelScope release).",
        "score": {
            "metric": "SI-SNRi",
            "value": 22.0,
            "dataset": "WSJ0-2mix test",
            "reference": "MossFormer2 paper (ICASSP 2024)",
        },
        "parity": MOSSFORMER2_PARITY,
        "unverified": ["score", "license", "revision (master is not pinned offline)"],
    },
    {
        "alias": "mossformer2_16k",
        "family": "mossformer2",
        "task": "speech",
        "sources": ["speaker_1", "speaker_2"],
        "sampling_rate": 16000,
        "converter": "clearvoice-mossformer2",
        "converter_function": "convert_clearvoice_checkpoint",
        "files": [
            {
                "hub": {
                    "repo_id": "alibabasglab/MossFormer2_SS_16K",
                    "revision": "main",
                    "filename": "last_best_checkpoint.pt",
                },
                "checksum_from": "hub-lfs",
            }
        ],
        # the converter finds the yaml beside the checkpoint; the pointer file
        # `last_best_checkpoint` (a small non-LFS text file, no published digest) is not needed
        "inline_files": {"MossFormer2_SS_16K.yaml": CLEARVOICE_MOSSFORMER2_SS_16K_YAML},
        "entry_point": "last_best_checkpoint.pt",
        "license": "apache-2.0",
        "authors": MOSSFORMER2_AUTHORS,
        "homepage": "https://huggingface.co/alibabasglab/MossFormer2_SS_16K",
        "description": "MossFormer2 (same architecture) from ClearerVoice-Studio, 2-speaker separation at "
        "16 kHz.",
        "parity": MOSSFORMER2_PARITY,
        "unverified": [
            "license (the clearvoice package is Apache-2.0; the Hub repo's license was not read)",
            "filename (last_best_checkpoint.pt, what the repo's last_best_checkpoint names; not read "
            "offline)",
            "revision (main is not pinned offline)",
        ],
    },
]

BUILTIN_ENTRIES: list[dict[str, Any]] = [
    *DEMUCS_ENTRIES,
    *DEMUCS_V2_ENTRIES,
    *ASTEROID_ENTRIES,
    *MODELSCOPE_ENTRIES,
    *DTTNET_ENTRIES,
    *ROFORMER_ENTRIES,
    *MOSSFORMER2_ENTRIES,
]

__all__ = ["BUILTIN_ENTRIES"]
