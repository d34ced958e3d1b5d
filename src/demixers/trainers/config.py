"""Training recipes: a YAML file with the sections ``model``, ``data``, ``training`` and ``hub``.

Every key has a default (``DEFAULTS`` below, which is also the reference of what a recipe may
contain). A recipe only lists what it changes; any key can then be overridden on the command line
with a dotted name::

    demixers train --config configs/mossformer_tiny_cpu.yaml --output-dir runs/tiny \\
        --training.max_steps=20 --training.learning_rate 3e-4 --model.config.num_blocks=2

Values (from the file and from the command line alike) are coerced to the type of the key's
default: ``--training.max_steps=20`` is the int 20, ``--training.learning_rate=1e-4`` the float
1e-4 (YAML 1.1 would read ``1e-4`` as a string), ``--training.ema=true`` a bool. Keys whose default
is ``null`` have a declared type in ``NULLABLE_TYPES``; ``null``/``none`` sets any of them back to
``None``. An unknown key is an error that names the closest known keys. The free-form mappings
``model.config`` (keyword arguments of the model's config class) and ``data.options`` (extra keyword
arguments of the dataset loader) accept any sub-key, parsed as YAML scalars.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("model", "data", "training", "hub")

# Mappings whose sub-keys are not checked (they are forwarded to the model's config class / to
# `load_separation_dataset` as keyword arguments, e.g. prepared_dir, corpus, n_src).
FREE_FORM = ("model.config", "data.options")

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        # Fine-tune: a Hub id or a local save_pretrained folder. Otherwise `type` + `config`
        # build a model from scratch (`type` is the registered model_type, e.g. "mossformer").
        "pretrained": None,
        "revision": None,
        "type": None,
        "config": {},
    },
    "data": {
        # A Hub dataset id, a local prepared (save_to_disk) folder, or a raw corpus folder;
        # read with demixers.datasets_scripts.load_separation_dataset.
        "dataset": None,
        # Generate the synthetic speech corpus (datasets_scripts.synthetic_librimix) at `dataset` if missing.
        "synthetic": False,
        # Target columns in the model's output order (null: every audio column but mixture/noise,
        # put in the model's order when the names match).
        "sources": None,
        "train_split": "train",
        "eval_split": "validation",
        "segment_seconds": 4.0,
        # Audio longer than this is cropped (centre) for validation; null keeps whole items.
        "eval_max_seconds": None,
        "max_eval_samples": None,
        # Number of random segments that make one epoch; null: one per training item.
        "samples_per_epoch": None,
        "drop_short": False,
        # Speech: re-mix utterances of different speakers with random gains (DynamicMixing).
        "dynamic_mixing": False,
        "dynamic_mixing_gain_db": [-5.0, 5.0],
        # Music: every source from an independent track/position, the mixture their sum (demucs' remix).
        "remix": False,
        # Augment: random gain (dB range), channel swap and sign flip probabilities.
        "gain_db_range": None,
        "channel_swap_prob": 0.0,
        "sign_flip_prob": 0.0,
        "num_workers": 0,
        "options": {},
    },
    "training": {
        "seed": 42,
        "batch_size": 4,
        "eval_batch_size": 1,
        # One of them bounds the run; max_steps wins when both are set.
        "max_steps": None,
        "epochs": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": "adamw",  # adam | adamw
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "max_grad_norm": None,
        "scheduler": "constant",  # constant | cosine | linear | plateau
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,  # cosine/linear floor, as a fraction of learning_rate
        "plateau_factor": 0.5,
        "plateau_patience": 2,
        "plateau_min_lr": 0.0,
        # auto | pit_si_snr | si_snr | l1 | mse | multi_resolution_stft | model (the model's own
        # output.loss)
        "loss": "auto",
        "si_snr_clamp_db": None,
        "si_snr_soft_max_db": None,
        # multi_resolution_stft (the RoFormers'): waveform L1 + weight * sum over the window sizes of
        # the STFT L1 (n_fft = max(window, stft_loss_n_fft), hop stft_loss_hop_length)
        "stft_loss_weight": 1.0,
        "stft_loss_window_sizes": [4096, 2048, 1024, 512, 256],
        "stft_loss_hop_length": 147,
        "stft_loss_n_fft": 2048,
        "stft_loss_normalized": False,
        "mixed_precision": "no",  # no | fp16 | bf16
        "ema_decay": None,
        "ema_for_eval": True,
        # Validation: every `eval_steps` optimizer steps, or at every epoch end when null.
        "eval_steps": None,
        # auto (si_snri for speech, sdr for music) | si_snri | si_snr | sdr | usdr | csdr | loss
        "metric": "auto",
        "early_stopping_patience": None,
        # Resumable checkpoints: every `save_steps` steps, or after every validation when null.
        "save_steps": None,
        "total_limit": 2,
        "max_consecutive_nonfinite": 5,
        "logging_steps": 10,
        "report_to": "tensorboard",  # tensorboard | none | any accelerate tracker name
        "progress_bar": True,
        "deterministic": False,
    },
    "hub": {
        "repo_id": None,
        "private": False,
        # Also push the best model every N epochs (null: only at the end).
        "push_every_epochs": None,
        # Branch the periodic pushes go to (null: commits on the default branch).
        "revision": None,
        "commit_message": "Upload model trained with demixers",
        # Upload the model, feature extractor and pipeline code, so plain transformers loads the
        # repo with trust_remote_code=True (false: only demixers users can load it).
        "code": True,
    },
}

# Types of the keys whose default is None.
NULLABLE_TYPES: dict[str, type] = {
    "model.pretrained": str,
    "model.revision": str,
    "model.type": str,
    "data.dataset": str,
    "data.sources": list,
    "data.eval_max_seconds": float,
    "data.max_eval_samples": int,
    "data.samples_per_epoch": int,
    "data.gain_db_range": list,
    "training.max_steps": int,
    "training.max_grad_norm": float,
    "training.si_snr_clamp_db": float,
    "training.si_snr_soft_max_db": float,
    "training.ema_decay": float,
    "training.eval_steps": int,
    "training.early_stopping_patience": int,
    "training.save_steps": int,
    "hub.repo_id": str,
    "hub.push_every_epochs": int,
    "hub.revision": str,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "training.optimizer": ("adam", "adamw"),
    "training.scheduler": ("constant", "cosine", "linear", "plateau"),
    "training.loss": ("auto", "pit_si_snr", "si_snr", "l1", "mse", "multi_resolution_stft", "model"),
    "training.mixed_precision": ("no", "fp16", "bf16"),
    "training.metric": ("auto", "si_snri", "si_snr", "sdr", "usdr", "csdr", "loss"),
}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}


# Largest STFT window / n_fft / hop of the multi-resolution STFT loss (65536 samples is 1.5 s at
# 44.1 kHz, far beyond the originals' 4096): a typo is refused instead of allocating gigabytes.
MAX_STFT_LOSS_SIZE = 1 << 16

# Far above any real batch of audio segments (speech recipes use 4-32, music ones 4-64 per device),
# low enough that an absurd value is refused here rather than by the allocator.
MAX_BATCH_SIZE = 4096


class ConfigError(ValueError):
    """A recipe or an override that cannot be applied (unknown key, wrong type, bad value)."""


def all_keys() -> list[str]:
    """Every dotted key a recipe may set (free-form mappings listed as ``model.config.*``)."""
    keys = []
    for section, values in DEFAULTS.items():
        for key in values:
            dotted = f"{section}.{key}"
            keys.append(f"{dotted}.*" if dotted in FREE_FORM else dotted)
    return keys


# Names people type for keys that are spelled otherwise here (used for "did you mean").
_ALIASES = {
    "lr": "learning_rate",
    "batch": "batch_size",
    "bs": "batch_size",
    "steps": "max_steps",
    "num_epochs": "epochs",
    "grad_clip": "max_grad_norm",
    "clip_grad_norm": "max_grad_norm",
    "precision": "mixed_precision",
    "fp16": "mixed_precision",
    "bf16": "mixed_precision",
    "accumulation": "gradient_accumulation_steps",
    "grad_accum": "gradient_accumulation_steps",
    "ema": "ema_decay",
    "patience": "early_stopping_patience",
    "segment": "segment_seconds",
    "seconds": "segment_seconds",
}


def _suggest(key: str) -> str:
    known = [k.removesuffix(".*") for k in all_keys()]
    section, _, tail = key.rpartition(".")
    if tail in _ALIASES:
        aliased = [
            k for k in known if k.endswith("." + _ALIASES[tail]) and (not section or k.startswith(section))
        ]
        if aliased:
            return f"; did you mean {', '.join(aliased)}?"
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:
        # also match on the last component alone (`--training.lr` -> learning_rate is too far, but
        # `--data.segment_second` -> data.segment_seconds is found)
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in known if difflib.get_close_matches(tail, [k.rsplit(".", 1)[-1]], cutoff=0.75)]
    return f"; did you mean {', '.join(close[:3])}?" if close else ""


def _parse_scalar(text: str) -> Any:
    """A command-line string read as YAML, with ``1e-4``-style floats understood."""
    stripped = text.strip()
    if stripped.lower() in _NULL:
        return None
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        pass
    try:
        return yaml.safe_load(stripped)
    except yaml.YAMLError:
        return text


def coerce(key: str, value: Any, kind: type | None) -> Any:
    """Coerce ``value`` (a YAML value or a command-line string) to ``kind``; raise ConfigError."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in _NULL and kind is not str:
        return None
    if kind is None:
        return _parse_scalar(value) if isinstance(value, str) else value

    def fail(reason: str = "") -> ConfigError:
        return ConfigError(f"{key}: expected {kind.__name__}, got {value!r}{reason}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise fail()
    if kind is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise fail() from None
                if as_float.is_integer():
                    return int(as_float)
        raise fail()
    if kind is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise fail() from None
        else:
            raise fail()
        if math.isnan(result):
            raise fail(" (NaN is not a valid setting)")
        return result
    if kind is str:
        if isinstance(value, (dict, list)):
            raise fail()
        return str(value)
    if kind is list:
        if isinstance(value, str):
            parsed = _parse_scalar(value)
            if isinstance(parsed, str):
                parsed = [_parse_scalar(part) for part in parsed.split(",")]
            value = parsed
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise fail()
        return value
    if kind is dict:
        if isinstance(value, str):
            value = _parse_scalar(value)
        if not isinstance(value, dict):
            raise fail()
        return dict(value)
    raise fail()  # pragma: no cover - every declared kind is handled above


def _kind(dotted: str) -> type | None:
    section, key = dotted.split(".", 1)
    default = DEFAULTS[section][key]
    if default is None:
        return NULLABLE_TYPES.get(dotted)
    return type(default)


def set_value(config: dict[str, dict[str, Any]], dotted: str, value: Any) -> None:
    """Set ``config[section][key...] = value`` after checking the key and coercing the value."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] not in DEFAULTS:
        raise ConfigError(
            f"unknown config key {dotted!r}: keys are <section>.<name> with section one of "
            f"{', '.join(SECTIONS)}{_suggest(dotted)}"
        )
    section = parts[0]
    head = ".".join(parts[:2])
    if head in FREE_FORM:
        target = config[section].setdefault(parts[1], {})
        if len(parts) == 2:
            config[section][parts[1]] = coerce(dotted, value, dict)
            return
        for part in parts[2:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{dotted}: {part!r} is not a mapping")
        target[parts[-1]] = _parse_scalar(value) if isinstance(value, str) else value
        return
    if len(parts) != 2 or parts[1] not in DEFAULTS[section]:
        raise ConfigError(f"unknown config key {dotted!r}{_suggest(dotted)}")
    coerced = coerce(dotted, value, _kind(dotted))
    choices = CHOICES.get(dotted)
    if choices is not None and coerced not in choices:
        raise ConfigError(f"{dotted} must be one of {', '.join(choices)}, got {coerced!r}")
    config[section][parts[1]] = coerced


def parse_overrides(arguments: Sequence[str]) -> list[tuple[str, str]]:
    """``["--training.max_steps=20", "--data.dataset", "x"]`` -> ``[(key, text), ...]``."""
    pairs = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if not argument.startswith("--") or len(argument) == 2:
            raise ConfigError(f"expected a --section.key=value override, got {argument!r}")
        body = argument[2:]
        if "=" in body:
            key, text = body.split("=", 1)
        else:
            if index + 1 >= len(arguments) or (
                arguments[index + 1].startswith("--") and "." in arguments[index + 1].split("=", 1)[0]
            ):
                raise ConfigError(f"override {argument!r} has no value (write --{body}=VALUE)")
            key, text = body, arguments[index + 1]
            index += 1
        if "." not in key:
            raise ConfigError(f"unknown option --{key} (config overrides are --section.key=value)")
        pairs.append((key, text))
        index += 1
    return pairs


def validate(config: dict[str, dict[str, Any]]) -> None:
    """Cross-key checks that single keys cannot express."""
    model = config["model"]
    if model["pretrained"] is None and model["type"] is None:
        raise ConfigError("model: set model.pretrained (a Hub id or a folder) or model.type (+ model.config)")
    training = config["training"]
    if training["max_steps"] is None and (training["epochs"] is None or training["epochs"] < 1):
        raise ConfigError("training: set training.max_steps or a positive training.epochs")
    for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "total_limit"):
        if training[key] < 1:
            raise ConfigError(f"training.{key} must be >= 1, got {training[key]}")
    for key in ("batch_size", "eval_batch_size"):
        if training[key] > MAX_BATCH_SIZE:
            raise ConfigError(
                f"training.{key} {training[key]} is beyond any sane batch (at most {MAX_BATCH_SIZE} "
                "per process); use gradient_accumulation_steps or more processes for larger batches"
            )
    for key in ("max_steps", "eval_steps", "save_steps", "early_stopping_patience", "ema_decay"):
        if training[key] is not None and training[key] <= 0:
            raise ConfigError(f"training.{key} must be positive (or null), got {training[key]}")
    if training["ema_decay"] is not None and not 0.0 < training["ema_decay"] < 1.0:
        raise ConfigError(f"training.ema_decay must be in (0, 1), got {training['ema_decay']}")
    if training["learning_rate"] <= 0:
        raise ConfigError(f"training.learning_rate must be positive, got {training['learning_rate']}")
    if training["max_consecutive_nonfinite"] < 1:
        raise ConfigError("training.max_consecutive_nonfinite must be >= 1")
    if not 0.0 < training["plateau_factor"] < 1.0:
        raise ConfigError(f"training.plateau_factor must be in (0, 1), got {training['plateau_factor']}")
    _validate_stft_loss(training)
    data = config["data"]
    if data["dataset"] is None:
        raise ConfigError("data.dataset is required (a Hub id, a prepared folder or a corpus folder)")
    if data["segment_seconds"] is not None and data["segment_seconds"] <= 0:
        raise ConfigError(f"data.segment_seconds must be positive, got {data['segment_seconds']}")
    for key in ("gain_db_range", "dynamic_mixing_gain_db"):
        value = data[key]
        if value is not None and (
            len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"data.{key} must be [low, high] in dB, got {value}")
    if data["dynamic_mixing"] and data["remix"]:
        raise ConfigError("data.dynamic_mixing (speech) and data.remix (music) cannot both be on")
    for key in ("channel_swap_prob", "sign_flip_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise ConfigError(f"data.{key} must be in [0, 1], got {data[key]}")


def _validate_stft_loss(training: Mapping[str, Any]) -> None:
    weight = training["stft_loss_weight"]
    if not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"training.stft_loss_weight must be finite and >= 0, got {weight}")
    sizes = training["stft_loss_window_sizes"]
    if not sizes:
        raise ConfigError("training.stft_loss_window_sizes must list at least one window size")
    for key, values, minimum in (
        ("stft_loss_window_sizes", sizes, 2),
        ("stft_loss_hop_length", [training["stft_loss_hop_length"]], 1),
        ("stft_loss_n_fft", [training["stft_loss_n_fft"]], 2),
    ):
        for value in values:
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not minimum <= value <= MAX_STFT_LOSS_SIZE
            ):
                raise ConfigError(
                    f"training.{key} must hold ints in [{minimum}, {MAX_STFT_LOSS_SIZE}], got {value!r}"
                )


def yaml_error_line(path: str | Path, error: yaml.YAMLError) -> str:
    """``path:line:column: problem`` on one line (PyYAML's messages span several lines).

    Tags such as ``!!python/object`` are refused by ``yaml.safe_load`` (a constructor error): a
    recipe is plain data and never creates Python objects.
    """
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    reason = f"{context}: {problem}" if context else str(problem)
    if isinstance(error, yaml.constructor.ConstructorError):
        reason += " (a recipe is plain YAML data; Python object tags are not allowed)"
    return f"{where}: not valid YAML: {reason}"


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] | Sequence[tuple[str, Any]] = (),
    check: bool = True,
) -> dict[str, dict[str, Any]]:
    """Defaults, then the YAML recipe at ``path``, then ``overrides``; returns the resolved config.

    ``overrides`` is either raw command-line words (``["--training.max_steps=20"]``) or
    ``(dotted_key, value)`` pairs.
    """
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        with path.open(encoding="utf-8") as handle:
            try:
                loaded = yaml.safe_load(handle) or {}
            except yaml.YAMLError as error:
                raise ConfigError(yaml_error_line(path, error)) from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(loaded).__name__}")
        for section, values in loaded.items():
            if section not in DEFAULTS:
                raise ConfigError(
                    f"{path}: unknown section {section!r} (sections: {', '.join(SECTIONS)})"
                    f"{_suggest(str(section))}"
                )
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"{path}: section {section!r} must be a mapping")
            for key, value in values.items():
                try:
                    set_value(config, f"{section}.{key}", value)
                except ConfigError as error:
                    raise ConfigError(f"{path}: {error}") from None
    raw = bool(overrides) and isinstance(overrides[0], str)
    pairs = parse_overrides(overrides) if raw else list(overrides)  # type: ignore[arg-type]
    for key, value in pairs:
        set_value(config, key, value)
    if check:
        validate(config)
    return config


def dump_config(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML, sections in their canonical order."""
    ordered = {section: dict(config[section]) for section in SECTIONS if section in config}
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(dump_config(config), encoding="utf-8")


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"training.seed": 42, ...}`` with lists/None/dicts as strings (for tracker hparams)."""
    flat: dict[str, Any] = {}
    for section in SECTIONS:
        for key, value in config.get(section, {}).items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
            else:
                flat[f"{section}.{key}"] = yaml.safe_dump(value, default_flow_style=True).strip()
    return flat


__all__ = [
    "CHOICES",
    "DEFAULTS",
    "FREE_FORM",
    "MAX_BATCH_SIZE",
    "NULLABLE_TYPES",
    "SECTIONS",
    "ConfigError",
    "all_keys",
    "coerce",
    "dump_config",
    "flat_config",
    "load_config",
    "parse_overrides",
    "save_config",
    "set_value",
    "validate",
    "yaml_error_line",
]
