"""Model cards (README.md) for demixers model folders, with Hub metadata and evaluation results.

`render_model_card` turns a model folder (``config.json``, weights) plus optional evaluation
results (the ``results.json`` of `demixers.evaluation.evaluate_separation`), training config and
figure into a README.md whose YAML metadata carries ``library_name: demixers``,
``pipeline_tag: audio-to-audio``, the tags, license, datasets, metrics, base model and a
``model-index`` with the results in the Hub's schema. The metadata is built with
`huggingface_hub.ModelCardData` and the whole card is parsed back with `huggingface_hub.ModelCard`
before it is returned, so a card that the Hub would misread is an error here.

The template (``template.md`` beside this file) is filled with `string.Template`; no Jinja2 needed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from ..evaluation.aggregate import HEADLINE_LABELS, METRICS, format_db
from ..utils.files import write_text_atomic
from ..utils.model_contract import is_permutation_invariant
from .architectures import Architecture, architecture_for

__all__ = ["FIGURE_NAME", "build_card_data", "eval_results_from", "render_model_card", "write_model_card"]

TEMPLATE_PATH = Path(__file__).with_name("template.md")
FIGURE_NAME = "spectrograms.png"
TASK_TYPE = "audio-to-audio"
TASK_NAME = "Audio Source Separation"
# The pipeline task a repo with remote code declares in config.json's `custom_pipelines`.
PIPELINE_TASK = "audio-source-separation"
# What the uploaded pipeline files import beyond torch, numpy and transformers (and its tqdm): they
# read files and resample (tests/model_cards check this against the files' imports).
PIPELINE_REQUIREMENTS = ("soundfile", "soxr")
# Packages every environment that runs the remote code has.
_BASE_PACKAGES = frozenset({"transformers", "torch", "numpy", "tqdm"})
TRAINING_CONFIG_NAMES = ("train_config.yaml", "training_config.yaml", "training_config.json")
# Training keys worth a line in the card, per section of the trainer's recipe.
_TRAINING_KEYS = {
    "model": ("pretrained", "type"),
    "data": (
        "dataset",
        "train_split",
        "eval_split",
        "segment_seconds",
        "dynamic_mixing",
        "remix",
        "gain_db_range",
        "channel_swap_prob",
        "sign_flip_prob",
    ),
    "training": (
        "seed",
        "batch_size",
        "gradient_accumulation_steps",
        "max_steps",
        "epochs",
        "optimizer",
        "learning_rate",
        "weight_decay",
        "scheduler",
        "warmup_steps",
        "max_grad_norm",
        "loss",
        "mixed_precision",
        "ema_decay",
        "metric",
        "early_stopping_patience",
    ),
}


def render_model_card(
    model_dir: str | os.PathLike,
    *,
    config: Any = None,
    results: Mapping[str, Any] | str | os.PathLike | None = None,
    training_config: Mapping[str, Any] | str | os.PathLike | None = None,
    training_summary: Mapping[str, Any] | None = None,
    datasets: str | Sequence[str] | None = None,
    license: str = "apache-2.0",
    base_model: str | Sequence[str] | None = None,
    repo_id: str | None = None,
    figure: str | os.PathLike | None = None,
    tags: Sequence[str] = (),
    about: str | None = None,
    remote_code: bool | None = None,
) -> str:
    """Return the README.md text for the model folder ``model_dir``.

    Args:
        model_dir: folder with ``config.json`` (and the weights); missing inputs are looked up there:
            ``config.json``, ``results.json``, ``train_config.yaml`` and ``spectrograms.png``.
        config: the model config (a ``PretrainedConfig`` or its dict); default ``config.json``.
        results: evaluation results (dict or path to ``results.json``) from
            `demixers.evaluation.evaluate_separation`; they fill the evaluation table and the
            ``model-index``. Their ``dataset``/``split`` fields name the evaluation data.
        training_config: the training recipe (dict, or a YAML/JSON path) with the trainer's
            ``model``/``data``/``training`` sections.
        training_summary: extra training facts to list (steps, best metric, ...).
        datasets: Hub dataset ids the model was trained/evaluated on (metadata ``datasets``).
        license: SPDX-like Hub license id.
        base_model: the model this one was fine-tuned from (metadata ``base_model``).
        repo_id: the Hub repository the card is for (used in the title and usage snippet).
        figure: a PNG to show (copied into ``model_dir`` when it lives elsewhere).
        tags: extra metadata tags.
        about: Markdown shown right after the summary, e.g. what the model is meant for and what its
            training data was (a model trained on synthetic data should say so up front).
        remote_code: whether the repository carries its code for plain Transformers
            (``trust_remote_code=True``; `demixers.pipelines.remote_code`); default: whether the
            config declares the ``audio-source-separation`` pipeline in ``custom_pipelines``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NotADirectoryError(f"{model_dir} is not a model folder")
    config_dict = _config_dict(model_dir, config)
    results_dict = _results_dict(model_dir, results)
    training = _training_dict(model_dir, training_config)
    figure_ref = _figure_reference(model_dir, figure)

    model_type = config_dict.get("model_type")
    architecture = architecture_for(model_type)
    domain = _domain(config_dict, architecture)
    source_names = list(config_dict.get("source_names") or [])
    base_models = _as_list(base_model)
    if base_models is None and training and isinstance(training.get("model"), Mapping):
        pretrained = training["model"].get("pretrained")
        if _looks_like_hub_id(pretrained):
            base_models = [pretrained]
    # Hub dataset ids: given, evaluated on, trained on (a local path is no Hub id)
    dataset_ids = _as_list(datasets) or []
    candidates = [results_dict.get("dataset") if results_dict else None]
    if training and isinstance(training.get("data"), Mapping):
        candidates.append(training["data"].get("dataset"))
    for candidate in candidates:
        if _looks_like_hub_id(candidate) and candidate not in dataset_ids:
            dataset_ids.append(candidate)

    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    card_data = build_card_data(
        model_name=model_name,
        model_type=model_type,
        architecture=architecture,
        domain=domain,
        results=results_dict,
        datasets=dataset_ids,
        license=license,
        base_model=base_models,
        tags=tags,
    )
    values = {
        "metadata": card_data.to_yaml(),
        "title": model_name,
        "summary": _summary(config_dict, architecture, source_names, base_models, results_dict, domain),
        "about": f"\n{about.strip()}\n" if about and about.strip() else "",
        "figure": (
            "\n![Spectrograms of an example mixture and of the stems this model separates from "
            f"it]({figure_ref})\n"
            if figure_ref
            else ""
        ),
        "description": architecture.description if architecture else _unknown_description(model_type),
        "architecture_name": architecture.name if architecture else (model_type or "unknown"),
        "paper_link": f"[paper]({architecture.paper_url}): {architecture.paper}"
        if architecture
        else "no paper on record",
        "properties": _properties_table(model_dir, config_dict, source_names),
        "model_ref": repo_id or "path/to/model_folder",
        "remote_code": _remote_code_section(config_dict, remote_code, repo_id or "path/to/model_folder"),
        "training": _training_section(training, training_summary, base_models),
        "evaluation": _evaluation_section(results_dict),
        "limitations": _limitations(domain, config_dict, source_names),
        "bibtex": architecture.bibtex if architecture else "% no citation on record for this architecture",
    }
    text = Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)
    _validate(text, card_data)
    return text


def _remote_code_section(config: Mapping[str, Any], remote_code: bool | None, model_ref: str) -> str:
    if remote_code is None:
        declared = config.get("custom_pipelines")
        remote_code = isinstance(declared, Mapping) and PIPELINE_TASK in declared
    if not remote_code:
        return ""
    packages = " ".join(["transformers", "torch", *remote_code_requirements(config.get("model_type"))])
    return (
        "\nWithout demixers, plain 🤗 Transformers runs the same pipeline from the code this repository "
        "carries (model, feature extractor, chunking and resampling); read it, then opt in with "
        "`trust_remote_code=True`:\n\n"
        f"```bash\npip install {packages}\n```\n\n"
        "```python\n"
        "from transformers import pipeline\n\n"
        f'separator = pipeline("{PIPELINE_TASK}", model="{model_ref}", trust_remote_code=True)\n'
        'stems = separator("mixture.wav")\n'
        "```\n"
    )


def remote_code_requirements(model_type: Any) -> list[str]:
    """Third-party packages the remote code of ``model_type`` imports beyond `_BASE_PACKAGES`: the
    pipeline's and those of the family's files (transformers refuses to load code whose imports are
    missing, so the card lists them)."""
    from transformers.dynamic_module_utils import get_imports

    from ..modeling import MODEL_FAMILIES

    names = set(PIPELINE_REQUIREMENTS)
    for config_class, _ in MODEL_FAMILIES:
        if config_class.model_type == model_type:
            folder = Path(sys.modules[config_class.__module__].__file__ or "").parent
            for path in folder.glob("*.py"):
                if not path.name.startswith(("convert_", "__")):
                    names.update(get_imports(path))
    third_party = names - set(sys.stdlib_module_names) - _BASE_PACKAGES
    return sorted(third_party)


def write_model_card(model_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card (see `render_model_card`) and write it atomically to ``model_dir/README.md``."""
    text = render_model_card(model_dir, **kwargs)
    return write_text_atomic(Path(model_dir) / "README.md", text)


# -- metadata -----------------------------------------------------------------------------------


def build_card_data(
    *,
    model_name: str,
    model_type: str | None,
    architecture: Architecture | None,
    results: Mapping[str, Any] | None,
    datasets: Sequence[str],
    domain: str | None = None,
    license: str,
    base_model: Sequence[str] | None,
    tags: Sequence[str] = (),
):
    """The `huggingface_hub.ModelCardData` of a card (validated by huggingface_hub itself)."""
    from huggingface_hub import ModelCardData

    all_tags = ["audio", "audio-source-separation", "demixers"]
    if domain is None and architecture is not None:
        domain = architecture.domain
    if domain is not None:
        all_tags.append("speech-separation" if domain == "speech" else "music-source-separation")
    if model_type:
        all_tags.append(model_type)
    all_tags.extend(tags)
    eval_results = eval_results_from(results) if results else []
    metrics = list(results["metrics"]) if results else None
    return ModelCardData(
        library_name="demixers",
        pipeline_tag=TASK_TYPE,
        license=license,
        tags=list(dict.fromkeys(all_tags)),
        datasets=list(datasets) or None,
        metrics=metrics,
        base_model=(base_model[0] if len(base_model) == 1 else list(base_model)) if base_model else None,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def eval_results_from(results: Mapping[str, Any]) -> list[Any]:
    """`huggingface_hub.EvalResult` entries for each metric's headline: the average over sources and
    each source (``metric_config`` is the source name, ``"average"`` for the average)."""
    from huggingface_hub import EvalResult

    dataset = results.get("dataset") or "custom"
    dataset_name = results.get("dataset_name") or str(dataset)
    entries = []
    aggregate = results["aggregate"]
    for name in results["metrics"]:
        spec = METRICS[name]
        rows = [("average", aggregate.get("average", {}).get(name, {}).get("headline"))]
        rows += [(source, aggregate[source][name]["headline"]) for source in results["source_names"]]
        for source, value in rows:
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            entries.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=str(dataset),
                    dataset_name=dataset_name,
                    dataset_config=results.get("dataset_config"),
                    dataset_split=results.get("split"),
                    metric_type=name,
                    metric_value=round(float(value), 3),
                    metric_name=f"{spec.display} ({source})",
                    metric_config=source,
                )
            )
    return entries


def _validate(text: str, card_data: Any) -> None:
    """Parse the card back as the Hub client does and check the metadata survived intact."""
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    parsed = card.data
    if parsed.library_name != "demixers" or parsed.pipeline_tag != TASK_TYPE:
        raise ValueError("the rendered card lost its library_name / pipeline_tag")
    expected = card_data.eval_results or []
    found = parsed.eval_results or []
    if len(found) != len(expected) or any(
        (a.metric_type, a.metric_value, a.metric_config) != (b.metric_type, b.metric_value, b.metric_config)
        for a, b in zip(found, expected, strict=True)
    ):
        raise ValueError("the rendered card's model-index does not parse back to the evaluation results")


# -- inputs ---------------------------------------------------------------------------------------


def _config_dict(model_dir: Path, config: Any) -> dict[str, Any]:
    if config is None:
        path = model_dir / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} has no config.json (pass config=...)")
        return json.loads(path.read_text(encoding="utf-8"))
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a PretrainedConfig or a dict, got {type(config).__name__}")


def _results_dict(model_dir: Path, results: Any) -> dict[str, Any] | None:
    if results is None:
        path = model_dir / "results.json"
        if not path.is_file():
            return None
        results = path
    if isinstance(results, (str, os.PathLike)):
        results = json.loads(Path(results).read_text(encoding="utf-8"))
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict or a path to results.json, got {type(results).__name__}")
    for key in ("metrics", "source_names", "aggregate"):
        if key not in results:
            raise ValueError(
                f"results lack {key!r}: pass the output of demixers.evaluation.evaluate_separation"
            )
    unknown = [name for name in results["metrics"] if name not in METRICS]
    if unknown:
        raise ValueError(f"results name unknown metrics {unknown}")
    return dict(results)


def _training_dict(model_dir: Path, training_config: Any) -> dict[str, Any] | None:
    if training_config is None:
        for name in TRAINING_CONFIG_NAMES:
            if (model_dir / name).is_file():
                training_config = model_dir / name
                break
        else:
            return None
    if isinstance(training_config, (str, os.PathLike)):
        path = Path(training_config)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            training_config = json.loads(text)
        else:
            import yaml

            training_config = yaml.safe_load(text)
    if not isinstance(training_config, Mapping):
        raise TypeError("training_config must be a mapping (or a YAML/JSON file holding one)")
    return dict(training_config)


def _figure_reference(model_dir: Path, figure: Any) -> str | None:
    if figure is None:
        return FIGURE_NAME if (model_dir / FIGURE_NAME).is_file() else None
    path = Path(figure)
    if not path.is_file():
        raise FileNotFoundError(f"figure {path} does not exist")
    model_root = model_dir.resolve()
    resolved = path.resolve()
    if model_root in resolved.parents:
        return resolved.relative_to(model_root).as_posix()
    target = model_dir / path.name
    shutil.copyfile(resolved, target)
    return path.name


def _looks_like_hub_id(value: Any) -> bool:
    return isinstance(value, str) and value.count("/") == 1 and not Path(value).exists()


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


# -- sections -------------------------------------------------------------------------------------


def _summary(
    config: Mapping[str, Any],
    architecture: Architecture | None,
    source_names: Sequence[str],
    base_models: Sequence[str] | None,
    results: Mapping[str, Any] | None,
    domain: str | None = None,
) -> str:
    name = architecture.name if architecture else config.get("model_type", "source separation")
    domain = {"speech": "speech separation", "music": "music source separation"}.get(
        domain or "", "audio source separation"
    )
    channels = config.get("audio_channels")
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}-channel" if channels else "")
    rate = config.get("sampling_rate")
    sources = ", ".join(f"`{source}`" for source in source_names) or "its sources"
    text = (
        f"A **{name}** model for {domain}: it splits a {layout + ' ' if layout else ''}mixture"
        f"{f' sampled at {rate} Hz' if rate else ''} into {len(source_names) or 'several'} sources "
        f"({sources})."
    )
    if base_models:
        text += (
            " Fine-tuned from "
            + ", ".join(f"[{model}](https://huggingface.co/{model})" for model in base_models)
            + "."
        )
    if results:
        headline = results["metrics"][0]
        value = results["aggregate"].get("average", {}).get(headline, {}).get("headline")
        if value is not None:
            where = results.get("dataset_name") or results.get("dataset")
            text += (
                f" {METRICS[headline].display}: **{value:.2f} dB**"
                + (
                    f" on {where}" + (f" ({results['split']})" if results.get("split") else "")
                    if where
                    else ""
                )
                + " (average over sources)."
            )
    return text


def _unknown_description(model_type: str | None) -> str:
    return (
        f"A demixers model of type `{model_type}`. No description of this architecture is on record in "
        "demixers' model-card renderer."
    )


def _parameter_count(model_dir: Path) -> int | None:
    """Number of parameters from the safetensors headers (no tensor is read)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        files = [model_dir / shard for shard in shards]
    else:
        files = [model_dir / "model.safetensors"]
    total = 0
    for path in files:
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for key, entry in header.items():
            if key != "__metadata__":
                total += math.prod(entry.get("shape", []))
    return total


def _properties_table(model_dir: Path, config: Mapping[str, Any], source_names: Sequence[str]) -> str:
    rows = [("model type", f"`{config.get('model_type', 'unknown')}`")]
    if source_names:
        rows.append(("sources (output order)", ", ".join(f"`{source}`" for source in source_names)))
    if config.get("sampling_rate"):
        rows.append(("sampling rate", f"{config['sampling_rate']} Hz"))
    if config.get("audio_channels"):
        rows.append(("audio channels", str(config["audio_channels"])))
    count = _parameter_count(model_dir)
    if count:
        rows.append(("parameters", f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count:,}"))
    lines = ["| property | value |", "| --- | --- |"] + [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def _training_section(
    training: Mapping[str, Any] | None, summary: Mapping[str, Any] | None, base_models: Sequence[str] | None
) -> str:
    if not training and not summary:
        text = "No training configuration was recorded with this model."
        if base_models:
            text += " The weights come from " + ", ".join(f"`{model}`" for model in base_models) + "."
        return text
    rows: list[tuple[str, str]] = []
    for section, keys in _TRAINING_KEYS.items():
        values = (training or {}).get(section)
        if not isinstance(values, Mapping):
            continue
        for key in keys:
            value = values.get(key)
            if value is None or value is False or (value == 0 and key.endswith("_prob")):
                continue
            rows.append((f"{section}.{key}", _format_value(value)))
    for key, value in (summary or {}).items():
        if value is not None:
            rows.append((str(key), _format_value(value)))
    text = "Trained with `demixers train`; the settings that matter:\n\n"
    text += "\n".join(
        ["| setting | value |", "| --- | --- |"] + [f"| {key} | {value} |" for key, value in rows]
    )
    if training:
        import yaml

        dump = yaml.safe_dump(dict(training), sort_keys=False, default_flow_style=False).rstrip()
        text += (
            "\n\n<details>\n<summary>Full training configuration</summary>\n\n"
            f"```yaml\n{dump}\n```\n\n</details>"
        )
    return text


def _evaluation_section(results: Mapping[str, Any] | None) -> str:
    if not results:
        return (
            "No evaluation results were attached to this card. Run `demixers evaluate` on a test "
            "split and push "
            "again with `--results results.json` to add them."
        )
    metrics = list(results["metrics"])
    sources = list(results["source_names"])
    aggregate = results["aggregate"]
    where = results.get("dataset_name") or results.get("dataset") or "the evaluation data"
    split = f", split `{results['split']}`" if results.get("split") else ""
    items = results.get("num_items")
    lines = [
        f"On {f'`{where}`' if results.get('dataset') else where}{split}"
        + (f", {items} items" if items else "")
        + " (dB, higher is better):",
        "",
        "| source | " + " | ".join(METRICS[name].display for name in metrics) + " |",
        "| --- | " + " | ".join("---:" for _ in metrics) + " |",
    ]
    for source in sources:
        lines.append(
            f"| {source} | "
            + " | ".join(format_db(aggregate[source][name]["headline"]) for name in metrics)
            + " |"
        )
    if len(sources) > 1 and "average" in aggregate:
        lines.append(
            "| **average** | "
            + " | ".join(format_db(aggregate["average"][name]["headline"]) for name in metrics)
            + " |"
        )
    lines.append("")
    for name in metrics:
        spec = METRICS[name]
        lines.append(f"- **{spec.display}** ({HEADLINE_LABELS[spec.headline]}): {spec.description}.")
    settings = results.get("settings", {})
    if settings.get("permutation_invariant"):
        lines.append("- Estimates were matched to references per item by the best mean SI-SNR (PIT).")
    lines.append(
        "- Frames where a reference or an estimate is silent are NaN in BSS Eval and skipped, as "
        "museval does; "
        "items with no valid frame are left out and counted."
    )
    return "\n".join(lines)


def _domain(config: Mapping[str, Any], architecture: Architecture | None) -> str | None:
    """``"speech"`` (unordered speakers) or ``"music"`` (named stems), as the config itself declares.

    A family's architecture alone does not decide it (a Conv-TasNet can be a music model); a
    ``config.json`` saved before ``permutation_invariant`` existed gets its family's default.
    """
    if "permutation_invariant" not in config and config.get("model_type"):
        from transformers import AutoConfig

        fields = {key: value for key, value in config.items() if key != "model_type"}
        try:
            config = AutoConfig.for_model(config["model_type"], **fields).to_dict()
        except (ValueError, TypeError, KeyError):
            return architecture.domain if architecture else None
    if "permutation_invariant" not in config:
        return architecture.domain if architecture else None
    return "speech" if is_permutation_invariant(config) else "music"


def _limitations(domain: str | None, config: Mapping[str, Any], source_names: Sequence[str]) -> str:
    rate = config.get("sampling_rate")
    points = []
    if domain == "speech":
        points += [
            f"Trained on read speech mixtures; expect lower quality on conversational, reverberant or noisy "
            f"recordings, on more than {len(source_names) or 'the trained number of'} overlapping "
            "speakers, and "
            "on non-speech sounds.",
            "The output order of the speakers is arbitrary (the model is trained with permutation-invariant "
            "training); do not rely on a speaker staying on the same output across separate calls.",
        ]
    elif domain == "music":
        points += [
            "Trained on Western popular music stems; genres, instruments and production styles far from the "
            "training data separate less cleanly, and sounds that belong to no stem end up in the "
            "closest one.",
            "Stems are estimates: expect bleeding between sources and artefacts, especially in dense mixes.",
        ]
    if rate:
        points.append(
            f"The model works at {rate} Hz; other rates are resampled by the pipeline, and content above "
            f"{rate // 2} Hz cannot be recovered."
        )
    points.append(
        "Separated audio can be used to remix, transcribe or analyse recordings; make sure you have "
        "the rights "
        "to the material you process."
    )
    return "\n".join(f"- {point}" for point in points)
