"""The Accelerate training loop behind ``train.py`` and ``demixers train``.

One code path for one CPU, one GPU and many processes (``accelerate launch``): the model and the
optimizer go through ``accelerator.prepare`` (DDP/FSDP/DeepSpeed are Accelerate's business), while
data order, per-step seeding, the learning-rate schedule and checkpoints are handled here so that a
run killed at any moment resumes to bitwise-identical weights (on CPU) with ``--resume``:

* step ``k`` (micro-batch ``m``, process ``r``) reseeds Python, NumPy and torch with a seed derived
  from ``(seed, k, m, r)`` before its forward pass (dropout, remix shuffles);
* the data position is ``(epoch, batches consumed)``, derived from the step counter (see
  `demixers.trainers.data`);
* a checkpoint holds the weights, the optimizer, the grad scaler, the schedule, the EMA, the trainer
  counters and every process' RNG states in formats that cannot run code when loaded (see
  `demixers.trainers.checkpointing`), written to a temporary folder and renamed.

Numbers are reported in ``OUTPUT_DIR/train_log.jsonl`` (one line per logging interval),
``OUTPUT_DIR/eval_log.jsonl`` (one line per validation) and the Accelerate trackers (TensorBoard in
``OUTPUT_DIR/logs`` by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.model_contract import is_permutation_invariant
from . import checkpointing as ckpt
from .config import dump_config, flat_config, save_config
from .data import ShardedBatchSampler, build_eval_dataset, build_train_dataset
from .losses import SeparationLoss, compute_loss, loss_options
from .optim import EMA, LRSchedule, build_optimizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"
TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
STEP_STREAM = 0x57E9
HIGHER_IS_BETTER = {"si_snri": True, "si_snr": True, "sdr": True, "usdr": True, "csdr": True, "loss": False}


class PretrainedLoadError(ValueError):
    """``model.pretrained`` does not load (missing, truncated, or weights that do not fit)."""


class SetupMemoryError(ValueError):
    """Setting up the run needs more memory than there is (batch size, model size)."""


_ALLOCATION_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def _flatten(error: BaseException, limit: int = 500) -> str:
    """The whole message on one line (the keys of a strict-loading error are on its later lines)."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _is_allocation_error(error: RuntimeError) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or any(part in text for part in _ALLOCATION_MESSAGES)


def _available_memory_bytes() -> int | None:
    """Free physical memory of this machine (None where the platform does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_batch_fits_in_memory(
    batch_size: int, segment_seconds: float | None, sampling_rate: int, channels: int, num_sources: int
) -> None:
    """Refuse a batch whose mixture and references alone exceed the free memory, before allocating."""
    available = _available_memory_bytes()
    if segment_seconds is None or available is None:
        return  # whole utterances: their length is only known when read
    samples = math.ceil(float(segment_seconds) * sampling_rate)
    needed = batch_size * samples * channels * (1 + num_sources) * 4  # float32 mixture + references
    if needed > available:
        raise SetupMemoryError(
            f"training.batch_size {batch_size} needs {needed / 2**30:.1f} GiB for the audio of one batch "
            f"of {segment_seconds} s segments alone, more than the {available / 2**30:.1f} GiB of free "
            "memory; lower training.batch_size (or data.segment_seconds)"
        )


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a NaN/Inf loss or gradient; training stopped."""


@dataclasses.dataclass
class TrainerState:
    """Counters saved in every checkpoint (``trainer_state.json`` and the Accelerate state)."""

    global_step: int = 0
    epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    consecutive_nonfinite: int = 0
    skipped_steps: int = 0
    samples_seen: int = 0
    last_eval: dict[str, Any] | None = None
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


@dataclasses.dataclass
class _StepEvents:
    """What falls due after one optimizer step."""

    epoch_end: bool
    final_step: bool
    due_eval: bool
    scheduled_save: bool
    log: bool


@dataclasses.dataclass
class _LoopState:
    """What the training loop carries from one step to the next (besides `TrainerState`)."""

    epoch_start: float
    last_saved_step: int
    window: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # records not logged yet
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    stop: bool = False
    pending_save: bool = False


def step_seed(seed: int, step: int, micro_step: int = 0, rank: int = 0) -> int:
    """The seed of one micro-batch of one process (a pure function of its arguments)."""
    return int(
        np.random.SeedSequence(
            [int(seed), int(step), int(micro_step), int(rank), STEP_STREAM]
        ).generate_state(1)[0]
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(model_section: dict[str, Any], seed: int) -> tuple[torch.nn.Module, Any]:
    """The model (pretrained or from a config) and its feature extractor."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    from ..feature_extraction_separation import SourceSeparationFeatureExtractor
    from ..modeling import MODEL_FAMILIES

    overrides = dict(model_section.get("config") or {})
    seed_everything(seed)
    feature_extractor = None
    if model_section.get("pretrained"):
        source = model_section["pretrained"]
        revision = model_section.get("revision")
        try:
            model = AutoModel.from_pretrained(source, revision=revision, **overrides)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            # strict loading (missing/unexpected/mismatched keys), a truncated file, a missing repo
            raise PretrainedLoadError(
                f"model.pretrained {source!r} cannot be loaded: {_flatten(error)}"
            ) from None
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source, revision=revision)
        except (OSError, ValueError):
            feature_extractor = None  # an older folder without preprocessor_config.json
    else:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        model_type = model_section["type"]
        if model_type not in CONFIG_MAPPING:
            families = sorted(config_class.model_type for config_class, _ in MODEL_FAMILIES)
            raise ValueError(
                f"model.type {model_type!r} is not a registered model type; demixers has {families}"
            )
        # the config class validates its fields (a bad value is a ValueError naming it)
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **overrides))
    if feature_extractor is None:
        feature_extractor = SourceSeparationFeatureExtractor(
            feature_size=int(getattr(model.config, "audio_channels", 1)),
            sampling_rate=int(model.config.sampling_rate),
        )
    return model, feature_extractor


def _now() -> float:
    return time.perf_counter()


class Trainer:
    """Train ``config`` (a resolved recipe, see `demixers.trainers.config`) into ``output_dir``.

    ``resume``: ``False`` (a fresh run: the output dir must not hold checkpoints), ``True`` (the
    newest complete checkpoint of ``output_dir``) or a checkpoint folder. ``loss_fn``, when given,
    replaces `compute_loss` (signature ``(estimates, references, padding_mask) -> SeparationLoss``).
    """

    def __init__(
        self,
        config: dict[str, dict[str, Any]],
        output_dir: str | os.PathLike[str],
        *,
        resume: bool | str | os.PathLike[str] = False,
        push_to_hub: str | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], SeparationLoss] | None = None,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.training = config["training"]
        self.data_config = config["data"]
        self.hub = dict(config["hub"])
        if push_to_hub:
            self.hub["repo_id"] = push_to_hub
        self.loss_fn = loss_fn
        self.state = TrainerState()
        self.history: list[dict[str, Any]] = []
        self.last_results: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------
    # set-up

    def _make_accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

        report_to = self.training["report_to"]
        log_with = (
            None
            if report_to in (None, "none", "")
            else [t.strip() for t in str(report_to).split(",") if t.strip()]
        )
        accelerator = Accelerator(
            mixed_precision=self.training["mixed_precision"],
            log_with=log_with,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            dataloader_config=DataLoaderConfiguration(split_batches=False),
            step_scheduler_with_optimizer=False,
        )
        return accelerator

    def _resolve_resume(self) -> Path | None:
        """The checkpoint to resume from (its ``trainer_state.json`` read into ``self._saved_state``).

        With ``resume=True`` a checkpoint whose ``trainer_state.json`` cannot be read counts as
        incomplete: the newest readable one is taken and a log line says so.
        """
        self._saved_state: dict[str, Any] = {}
        if not self.resume:
            existing = ckpt.find_checkpoints(self.output_dir)
            if existing:
                raise FileExistsError(
                    f"{self.output_dir} already holds checkpoints (newest: {existing[-1][1].name}); "
                    "pass --resume "
                    "to continue that run, or choose another --output-dir"
                )
            return None
        if self.resume is True:
            candidates = [path for _, path in reversed(ckpt.find_checkpoints(self.output_dir))]
            if not candidates:
                raise FileNotFoundError(f"--resume: no complete checkpoint in {self.output_dir}")
            first_error: ckpt.ResumeError | None = None
            for path in candidates:
                try:
                    self._saved_state = ckpt.read_trainer_state(path)
                except ckpt.ResumeError as error:
                    first_error = first_error or error
                    continue
                if first_error is not None and self.is_main:
                    logger.warning("--resume: %s; falling back to %s", first_error, path.name)
                ckpt.check_safe_layout(path, self._saved_state)
                return path
            raise ckpt.ResumeError(f"--resume: no usable checkpoint in {self.output_dir} ({first_error})")
        path = Path(self.resume)
        if not (path / ckpt.TRAINER_STATE_NAME).is_file():
            raise FileNotFoundError(
                f"--resume: {path} is not a complete checkpoint (no {ckpt.TRAINER_STATE_NAME})"
            )
        self._saved_state = ckpt.read_trainer_state(path)
        ckpt.check_safe_layout(path, self._saved_state)
        return path

    def setup(self) -> None:
        """Accelerator, model, data, optimizer and (with ``resume``) the checkpoint's state.

        Running out of memory here (an absurd batch size or model config) is a one-line
        `SetupMemoryError`, not an allocator traceback.
        """
        try:
            self._setup()
        except MemoryError as error:
            raise SetupMemoryError(
                f"out of memory while setting up training ({error or 'MemoryError'}); "
                "lower training.batch_size or the model size"
            ) from None
        except RuntimeError as error:
            if not _is_allocation_error(error):
                raise
            raise SetupMemoryError(
                f"out of memory while setting up training ({ckpt.one_line_error(error)}); "
                "lower training.batch_size or the model size"
            ) from None

    def _setup(self) -> None:
        self._setup_run()
        model = self._setup_model()
        self._setup_data()
        optimizer = self._setup_optimization(model)
        self._setup_distributed(model, optimizer)
        if self.resume_from is not None:
            self._load_training_state(self.resume_from)
            self.history = self._read_eval_log()
            self.accelerator.print(
                f"resumed from {self.resume_from} at step {self.state.global_step} (epoch {self.state.epoch})"
            )
        if self.accelerator.log_with:
            self.accelerator.init_trackers("train", config=flat_config(self.config))

    def _setup_run(self) -> None:
        """Accelerator, output folder (stale temporaries removed), the checkpoint to resume, the recipe."""
        self.accelerator = accelerator = self._make_accelerator()
        self.world_size = accelerator.num_processes
        self.rank = accelerator.process_index
        self.is_main = accelerator.is_main_process
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for action in ckpt.clean_stale(self.output_dir):
                logger.info("output dir clean-up: %s", action)
        accelerator.wait_for_everyone()
        self.resume_from = self._resolve_resume()
        accelerator.print("resolved config:\n" + dump_config(self.config).rstrip())
        if self.is_main:
            save_config(self.config, self.output_dir / CONFIG_FILE)
        if self.training["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _setup_model(self) -> torch.nn.Module:
        """The model, and what its config decides: sources, loss, metric (checked against a resume)."""
        model, self.feature_extractor = build_model(self.config["model"], self.training["seed"])
        self.model_config = model.config
        self.source_names = list(getattr(model.config, "source_names", []))
        self.speech = is_permutation_invariant(model.config)
        self.sampling_rate = int(model.config.sampling_rate)
        self.audio_channels = int(getattr(model.config, "audio_channels", 1))
        loss_name = self.training["loss"]
        if loss_name == "auto":
            loss_name = "pit_si_snr" if self.speech else "l1"
        self.loss_name = loss_name
        metric = self.training["metric"]
        if metric == "auto":
            metric = "si_snri" if self.speech else "sdr"
        self.metric_name = metric
        if self.resume_from is not None:
            saved = self._saved_state
            ckpt.check_resume_compatible(saved, model.config.to_dict(), self.world_size, self.resume_from)
            if saved.get("batch_size") not in (None, self.training["batch_size"]) or saved.get(
                "gradient_accumulation_steps"
            ) not in (None, self.training["gradient_accumulation_steps"]):
                warnings.warn(
                    f"resuming {self.resume_from} with another batch size / accumulation: the data order "
                    "differs from the original run from here on",
                    stacklevel=3,
                )
        return model

    def _setup_data(self) -> None:
        """Training and evaluation datasets, steps per epoch and the total number of steps."""
        _check_batch_fits_in_memory(
            self.training["batch_size"],
            self.data_config.get("segment_seconds"),
            self.sampling_rate,
            self.audio_channels,
            len(self.source_names),
        )
        seed = self.training["seed"]
        fixed_order = self.loss_name not in ("pit_si_snr",)
        self._maybe_generate_synthetic()
        # the main process prepares a raw corpus (or downloads) first; the others reuse its cache
        with self.accelerator.main_process_first():
            self.train_dataset = build_train_dataset(
                self.data_config, seed, self.sampling_rate, self.source_names, fixed_order
            )
            self.eval_dataset = build_eval_dataset(
                self.data_config, self.sampling_rate, self.source_names, fixed_order
            )
        batch_size = self.training["batch_size"]
        self.accumulation = self.training["gradient_accumulation_steps"]
        probe = ShardedBatchSampler(
            len(self.train_dataset), batch_size, seed=seed, world_size=self.world_size
        )
        self.steps_per_epoch = probe.batches_per_epoch // self.accumulation
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set has {len(self.train_dataset)} segments per epoch, fewer than one "
                "optimizer step "
                f"({batch_size} x {self.world_size} process(es) x {self.accumulation} accumulation); "
                "raise data.samples_per_epoch or lower the batch size"
            )
        if self.resume_from is not None:
            saved_steps = self._saved_state.get("steps_per_epoch")
            if saved_steps not in (None, self.steps_per_epoch):
                warnings.warn(
                    f"the checkpoint was made with {saved_steps} steps per epoch and this recipe gives "
                    f"{self.steps_per_epoch}: epochs and data order differ from the original run "
                    "from here on",
                    stacklevel=3,
                )
        if self.training["max_steps"] is not None:
            self.total_steps = int(self.training["max_steps"])
        else:
            self.total_steps = int(self.training["epochs"]) * self.steps_per_epoch

    def _setup_optimization(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer and the learning-rate schedule (which needs the total number of steps)."""
        optimizer = build_optimizer(model, self.training)
        self.schedule = LRSchedule(
            optimizer,
            self.training["scheduler"],
            self.training["learning_rate"],
            self.total_steps,
            warmup_steps=self.training["warmup_steps"],
            min_lr_ratio=self.training["min_lr_ratio"],
            plateau_factor=self.training["plateau_factor"],
            plateau_patience=self.training["plateau_patience"],
            plateau_min_lr=self.training["plateau_min_lr"],
            plateau_mode="max" if HIGHER_IS_BETTER[self.metric_name] else "min",
        )
        return optimizer

    def _setup_distributed(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """``accelerator.prepare`` (DDP/FSDP/DeepSpeed) and the EMA of the prepared weights."""
        from accelerate.utils import DistributedType

        accelerator = self.accelerator
        self.sharded_weights = accelerator.distributed_type in (
            DistributedType.FSDP,
            DistributedType.DEEPSPEED,
        )
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            # the trainer feeds its own batches: tell DeepSpeed their size (it cannot see a dataloader)
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_config.get("train_micro_batch_size_per_gpu") in (None, "auto"):
                ds_config["train_micro_batch_size_per_gpu"] = self.training["batch_size"]
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.schedule.optimizer = self.optimizer
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.ema = None
        if self.training["ema_decay"] is not None:
            if self.sharded_weights:
                raise ValueError("training.ema_decay is not supported with FSDP/DeepSpeed (sharded weights)")
            self.ema = EMA(self.unwrapped, self.training["ema_decay"]).to(accelerator.device)

    def _maybe_generate_synthetic(self) -> None:
        """``data.synthetic: true``: write the synthetic LibriMix-layout corpus if it is missing."""
        if not self.data_config.get("synthetic"):
            return
        root = Path(self.data_config["dataset"])
        if self.is_main and not root.exists():
            from ..datasets_scripts.synthetic_librimix import make_synthetic_librimix

            self.accelerator.print(f"generating the synthetic speech corpus in {root}")
            make_synthetic_librimix(
                root.with_name(root.name + ".partial"),
                num_speakers=len(self.source_names),
                sampling_rate=self.sampling_rate,
            )
            os.replace(root.with_name(root.name + ".partial"), root)
        self.accelerator.wait_for_everyone()

    def _read_eval_log(self) -> list[dict[str, Any]]:
        path = self.output_dir / EVAL_LOG
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry.get("step", 0) <= self.state.global_step:
                    entries.append(entry)
        return entries

    # ------------------------------------------------------------------------------------------
    # one step

    def _loader(self, epoch: int, start_batch: int) -> torch.utils.data.DataLoader:
        from ..datasets_scripts import collate_separation

        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(epoch)
        sampler = ShardedBatchSampler(
            len(self.train_dataset),
            self.training["batch_size"],
            seed=self.training["seed"],
            epoch=epoch,
            world_size=self.world_size,
            rank=self.rank,
            start_batch=start_batch,
        )
        workers = int(self.data_config["num_workers"])
        return torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=collate_separation,
            num_workers=workers,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=False,
        )

    def _batch_to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = self.accelerator.device
        return {
            k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()
        }

    def _forward_loss(
        self, model: torch.nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = batch.get("padding_mask")
        if mask is not None and bool(mask.all()):
            mask = None
        if self.loss_name == "model" and self.loss_fn is None:
            output = model(
                input_values=batch["input_values"],
                labels=batch["labels"],
                padding_mask=mask,
                return_dict=True,
            )
            if output.loss is None:
                raise ValueError("training.loss=model but the model returned no loss")
            return output.loss, None
        output = model(input_values=batch["input_values"], padding_mask=mask, return_dict=True)
        if self.loss_fn is not None:
            result = self.loss_fn(output.audio_values, batch["labels"], mask)
        else:
            result = compute_loss(
                self.loss_name,
                output.audio_values,
                batch["labels"],
                mask,
                **loss_options(self.training),
            )
        return result.loss, result.per_source

    def _all_finite(self, value: torch.Tensor) -> bool:
        flag = torch.isfinite(value.detach().float()).all().float().reshape(1).to(self.accelerator.device)
        if self.world_size > 1:
            flag = self.accelerator.gather(flag).min()
        return bool(flag.item() > 0)

    def _train_step(self, iterator: Any) -> dict[str, Any]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches."""
        accelerator = self.accelerator
        step = self.state.global_step
        lr = self.schedule.apply(step)
        self.model.train()
        total_loss = torch.zeros((), device=accelerator.device)
        per_source_total = None
        bad = False
        samples = 0
        for micro in range(self.accumulation):
            batch = self._batch_to_device(next(iterator))
            samples += batch["input_values"].shape[0]
            seed_everything(step_seed(self.training["seed"], step, micro, self.rank))
            sync = micro == self.accumulation - 1
            context = contextlib.nullcontext() if sync else accelerator.no_sync(self.model)
            with context:
                loss, per_source = self._forward_loss(self.model, batch)
                finite = self._all_finite(loss)
                if not finite:
                    bad = True
                if bad:
                    # keep the processes' collectives in step; the gradients are discarded below
                    if self.world_size > 1 and loss.requires_grad:
                        accelerator.backward(torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0)
                else:
                    accelerator.backward(loss / self.accumulation)
            total_loss += loss.detach().float() / self.accumulation
            if per_source is not None:
                contribution = per_source.detach().float().to(accelerator.device) / self.accumulation
                per_source_total = (
                    contribution if per_source_total is None else per_source_total + contribution
                )
        grad_norm = None
        if not bad:
            max_norm = self.training["max_grad_norm"]
            norm = accelerator.clip_grad_norm_(
                self.model.parameters(), max_norm if max_norm else float("inf")
            )
            if norm is not None:
                grad_norm = float(norm)
                if not math.isfinite(grad_norm) and self.training["mixed_precision"] != "fp16":
                    bad = True  # fp16: the grad scaler skips the step and lowers its scale itself
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.state.consecutive_nonfinite += 1
            self.state.skipped_steps += 1
            limit = self.training["max_consecutive_nonfinite"]
            message = (
                f"step {step + 1}: non-finite loss or gradient ({float(total_loss):.4g}); step skipped "
                f"({self.state.consecutive_nonfinite} in a row, stopping at {limit})"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            if self.state.consecutive_nonfinite >= limit:
                raise NonFiniteLossError(
                    f"{limit} consecutive steps had a non-finite loss or gradient (last at step {step + 1}); "
                    f"training stopped, the last good checkpoint in {self.output_dir} is untouched"
                )
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.consecutive_nonfinite = 0
            if self.ema is not None:
                self.ema.update(self.unwrapped)
        self.state.global_step += 1
        self.state.samples_seen += samples * self.world_size
        loss_value = total_loss.reshape(1)
        if self.world_size > 1:
            loss_value = accelerator.reduce(loss_value, "mean")
            if per_source_total is not None:
                per_source_total = accelerator.reduce(per_source_total, "mean")
        return {
            "loss": float(loss_value.item()),
            "per_source": None if per_source_total is None else per_source_total.tolist(),
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": bad,
        }

    # ------------------------------------------------------------------------------------------
    # validation

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Validate on the (possibly capped) eval split; every process gets the same summary.

        Returns ``{"num_items", "loss", <metric>: headline, ...}``; the full `evaluate_separation`-style
        results (per item and per source) are kept in ``self.last_results`` for ``best/``.
        """
        from accelerate.utils import gather_object

        from ..datasets_scripts import collate_separation
        from .validation import headline, metric_names, score_item, validation_results

        if self.eval_dataset is None:
            return {}
        # Sharded weights (FSDP/DeepSpeed) need the wrapped model, whose forward has collectives:
        # every process then runs the same number of batches (padded with a repeated item whose
        # result is dropped). Otherwise the plain module runs with no communication at all.
        model = self.model if self.sharded_weights else self.unwrapped
        was_training = model.training
        model.eval()
        use_ema = self.ema is not None and self.training["ema_for_eval"]
        context = self.ema.applied(self.unwrapped) if use_ema else contextlib.nullcontext()
        metrics = metric_names(self.speech, self.metric_name)
        records: list[dict[str, Any]] = []
        losses: list[float] = []
        count = len(self.eval_dataset)
        indices = list(range(self.rank, count, self.world_size))
        if self.sharded_weights:
            indices += [-1] * (math.ceil(count / self.world_size) - len(indices))
        batch_size = self.training["eval_batch_size"]
        with context:
            for start in range(0, len(indices), batch_size):
                positions = indices[start : start + batch_size]
                items = [self.eval_dataset[i if i >= 0 else count - 1] for i in positions]
                batch = self._batch_to_device(collate_separation(items))
                mask = batch["padding_mask"]
                with self.accelerator.autocast():
                    output = model(
                        input_values=batch["input_values"],
                        padding_mask=None if bool(mask.all()) else mask,
                        return_dict=True,
                    )
                estimates = output.audio_values.float()
                for b, position in enumerate(positions):
                    if position < 0:
                        continue  # padding item of a sharded evaluation
                    length = int(mask[b].sum())
                    est = estimates[b, ..., :length]
                    ref = batch["labels"][b, ..., :length].float()
                    losses.append(self._eval_loss(est, ref))
                    records.append(
                        score_item(
                            est,
                            ref,
                            batch["input_values"][b, ..., :length],
                            item_id=items[b].get("id", position),
                            source_names=self.source_names,
                            metrics=metrics,
                            speech=self.speech,
                            sampling_rate=self.sampling_rate,
                        )
                    )
        if was_training:
            model.train()
        if self.world_size > 1:
            records = gather_object(records)
            losses = gather_object(losses)
        if not records:
            return {}
        results = validation_results(
            records,
            self.source_names,
            metrics,
            speech=self.speech,
            metadata={
                "dataset": self.data_config["dataset"],
                "split": self.data_config["eval_split"],
                "step": self.state.global_step,
                "ema_weights": use_ema,
            },
        )
        self.last_results = results
        summary: dict[str, Any] = {"num_items": len(records)}
        finite = [value for value in losses if math.isfinite(value)]
        summary["loss"] = float(np.mean(finite)) if finite else float("nan")
        for name in metrics:
            summary[name] = headline(results, name)
        return summary

    def _eval_loss(self, estimates: torch.Tensor, references: torch.Tensor) -> float:
        if self.loss_fn is not None:
            return float(self.loss_fn(estimates[None], references[None], None).loss)
        name = "pit_si_snr" if self.loss_name == "model" and self.speech else self.loss_name
        if name == "model":
            name = "l1"
        return float(
            compute_loss(
                name,
                estimates[None],
                references[None],
                None,
                **loss_options(self.training),
            ).loss
        )

    def _improved(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if HIGHER_IS_BETTER[self.metric_name] else value < best

    # ------------------------------------------------------------------------------------------
    # saving

    def _save_model_folder(self, folder: Path, use_ema: bool) -> None:
        """``save_pretrained`` + feature extractor into ``folder`` (main process writes)."""
        accelerator = self.accelerator
        context = (
            self.ema.applied(self.unwrapped)
            if (use_ema and self.ema is not None)
            else contextlib.nullcontext()
        )
        with context:
            state_dict = accelerator.get_state_dict(self.model)
            if self.is_main:
                for name, tensor in state_dict.items():
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        raise NonFiniteLossError(f"refusing to save non-finite weights ({name}) to {folder}")
                self.unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
                self.feature_extractor.save_pretrained(folder)

    def _save_training_state(self, folder: Path) -> None:
        """Weights, EMA, optimizer, scaler and this process' RNG states in code-free formats.

        The counters, the schedule and the EMA counters go into ``trainer_state.json``, written last
        by `save_checkpoint`.
        """
        accelerator = self.accelerator
        if self.sharded_weights:
            # every process holds a shard of the optimizer; the weights are gathered for the main one
            state_dict = accelerator.get_state_dict(self.model)
            if self.is_main:
                ckpt.save_tensors(folder / ckpt.MODEL_WEIGHTS_NAME, state_dict)
            ckpt.save_torch_state(folder / f"optimizer_{self.rank}.bin", self.optimizer.state_dict())
        elif self.is_main:
            from safetensors.torch import save_model

            save_model(self.unwrapped, str(folder / ckpt.MODEL_WEIGHTS_NAME))  # handles tied weights
            ckpt.save_torch_state(folder / ckpt.OPTIMIZER_NAME, self.optimizer.state_dict())
        if self.is_main:
            if self.ema is not None:
                ckpt.save_tensors(folder / ckpt.EMA_WEIGHTS_NAME, self.ema.shadow)
            if accelerator.scaler is not None:
                ckpt.save_torch_state(folder / ckpt.SCALER_NAME, accelerator.scaler.state_dict())
        ckpt.save_rng_state(folder, self.rank)

    def _load_training_state(self, folder: Path) -> None:
        """Inverse of `_save_training_state` (+ the counters of ``trainer_state.json``).

        Nothing is unpickled beyond tensors and plain containers; a file that is missing, truncated
        or holds anything else is a one-line `ResumeError` naming it.
        """
        saved = self._saved_state
        if self.sharded_weights:
            raise ckpt.ResumeError(
                f"{folder}: resuming FSDP/DeepSpeed (sharded) runs is not supported; fine-tune from "
                f"its exported weights with --model.pretrained={folder / ckpt.MODEL_SUBDIR}"
            )
        weights_path = folder / ckpt.MODEL_WEIGHTS_NAME
        if not weights_path.is_file():
            raise ckpt.ResumeError(f"{weights_path}: missing from the checkpoint")
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        try:
            load_model(self.unwrapped, str(weights_path), strict=True)  # tied weights are stored once
        except SafetensorError as error:
            raise ckpt.ResumeError(
                f"{weights_path}: not a readable safetensors file ({ckpt.one_line_error(error)})"
            ) from None
        except RuntimeError as error:
            # the whole message: the offending keys are on its later lines
            raise ckpt.ResumeError(f"{weights_path}: does not fit the model ({_flatten(error)})") from None
        optimizer_path = folder / ckpt.OPTIMIZER_NAME
        optimizer_state = ckpt.load_torch_state(optimizer_path)
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            raise ckpt.ResumeError(
                f"{optimizer_path}: not an optimizer state of this model ({ckpt.one_line_error(error)})"
            ) from None
        scaler = self.accelerator.scaler
        if scaler is not None:
            scaler_path = folder / ckpt.SCALER_NAME
            scaler_state = ckpt.load_torch_state(scaler_path)
            try:
                scaler.load_state_dict(scaler_state)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
                raise ckpt.ResumeError(
                    f"{scaler_path}: not a grad scaler state ({ckpt.one_line_error(error)})"
                ) from None
        if self.ema is not None:
            ema_path = folder / ckpt.EMA_WEIGHTS_NAME
            shadow = ckpt.load_tensors(ema_path)
            counters = saved.get("ema") or {}
            try:
                self.ema.load_state_dict({"num_updates": counters["num_updates"], "shadow": shadow})
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise ckpt.ResumeError(
                    f"{ema_path}: not an EMA state of this model ({ckpt.one_line_error(error)})"
                ) from None
        state_path = folder / ckpt.TRAINER_STATE_NAME
        try:
            self.schedule.load_state_dict(saved["schedule"])
            self.state.load_state_dict(saved)
        except (KeyError, TypeError, ValueError) as error:
            raise ckpt.ResumeError(
                f"{state_path}: malformed trainer state ({ckpt.one_line_error(error)})"
            ) from None
        ckpt.load_rng_state(folder, self.rank)

    def _trainer_state_json(self) -> dict[str, Any]:
        return {
            **self.state.state_dict(),
            "checkpoint_format": ckpt.CHECKPOINT_FORMAT,
            "schedule": self.schedule.state_dict(),
            "ema": None
            if self.ema is None
            else {"decay": self.ema.decay, "num_updates": self.ema.num_updates},
            "world_size": self.world_size,
            "batch_size": self.training["batch_size"],
            "gradient_accumulation_steps": self.training["gradient_accumulation_steps"],
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "metric": self.metric_name,
            "loss": self.loss_name,
            "model_config": self.model_config.to_dict(),
            "lr": self.schedule.lr_at(max(self.state.global_step - 1, 0)),
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically, refresh ``last/``, then prune old checkpoints."""
        accelerator = self.accelerator
        final = self.output_dir / ckpt.checkpoint_name(self.state.global_step)
        tmp = ckpt.temporary_path(final)
        if self.is_main:
            ckpt.prepare_temporary(final)
        accelerator.wait_for_everyone()
        self._save_training_state(tmp)
        self._save_model_folder(tmp / ckpt.MODEL_SUBDIR, use_ema=True)
        accelerator.wait_for_everyone()
        if self.is_main:
            ckpt.write_json(tmp / ckpt.TRAINER_STATE_NAME, self._trainer_state_json())
            ckpt.commit_temporary(tmp, final)
            with ckpt.atomic_directory(self.output_dir / "last") as last:
                for entry in (final / ckpt.MODEL_SUBDIR).iterdir():
                    _link_or_copy(entry, last / entry.name)
                ckpt.write_json(last / ckpt.TRAINER_STATE_NAME, self._trainer_state_json())
            ckpt.prune_checkpoints(self.output_dir, self.training["total_limit"])
        accelerator.wait_for_everyone()
        return final

    def _save_best(self, results: dict[str, Any]) -> None:
        final = self.output_dir / "best"
        tmp = ckpt.temporary_path(final)
        if self.is_main:
            ckpt.prepare_temporary(final)
        self.accelerator.wait_for_everyone()
        self._save_model_folder(tmp, use_ema=self.training["ema_for_eval"])
        self.accelerator.wait_for_everyone()
        if self.is_main:
            from ..evaluation import write_results

            ckpt.write_json(
                tmp / "eval_results.json",
                {
                    "step": self.state.global_step,
                    "epoch": self.state.epoch,
                    "metric": self.metric_name,
                    **results,
                },
            )
            if self.last_results:
                write_results(self.last_results, tmp, per_item_table=False)
            save_config(self.config, tmp / CONFIG_FILE)
            ckpt.commit_temporary(tmp, final)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------
    # hub

    def push_to_hub(self, revision: str | None = None, final: bool = True) -> str | None:
        """Push ``best/`` (or ``last/``) with a generated model card to ``hub.repo_id``."""
        repo_id = self.hub.get("repo_id")
        if not repo_id or not self.is_main:
            return None
        from .hub import push_model_folder

        folder = self.output_dir / "best"
        if not (folder / "config.json").is_file():
            folder = self.output_dir / "last"
        message = self.hub.get("commit_message") or "Upload model trained with demixers"
        if not final:
            message = f"{message} (epoch {self.state.epoch + 1}, step {self.state.global_step})"
        url = push_model_folder(
            folder,
            repo_id,
            private=bool(self.hub.get("private")),
            revision=revision,
            commit_message=message,
            config=self.config,
            state=self._trainer_state_json(),
            metric=self.metric_name,
            code=bool(self.hub.get("code", True)),
        )
        self.accelerator.print(
            f"pushed {folder.name}/ to {repo_id}" + (f" ({revision})" if revision else "") + f": {url}"
        )
        return url

    # ------------------------------------------------------------------------------------------
    # loop

    def _log_line(self, path: Path, entry: dict[str, Any]) -> None:
        if self.is_main:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, default=float) + "\n")

    def _truncate_logs(self) -> None:
        """After a resume, drop log lines of steps past the checkpoint (they are redone)."""
        if not self.is_main:
            return
        for name in (TRAIN_LOG, EVAL_LOG):
            path = self.output_dir / name
            if not path.is_file():
                continue
            lines = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.state.global_step
            ]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def train(self) -> dict[str, Any]:
        """Run to ``total_steps`` (or early stopping); return the final summary.

        ``training.deterministic`` switches torch's global deterministic-algorithms mode on for the
        run; the caller's setting is restored when this returns or raises.
        """
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        try:
            return self._train()
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])

    def _train(self) -> dict[str, Any]:
        self.setup()
        self._prepare_logs()
        loop = _LoopState(
            epoch_start=_now(),
            last_saved_step=self.state.global_step if self.resume_from is not None else -1,
        )
        progress = self._progress_bar()
        try:
            while self.state.global_step < self.total_steps and not loop.stop:
                self._run_epoch(loop, progress)
        finally:
            progress.close()
        if loop.last_saved_step != self.state.global_step and self.state.consecutive_nonfinite == 0:
            self.save_checkpoint()
        return self._finish()

    def _prepare_logs(self) -> None:
        """A resumed run drops the log lines it will redo; a fresh run starts empty logs."""
        if self.resume_from is not None:
            self._truncate_logs()
        else:
            for name in (TRAIN_LOG, EVAL_LOG):
                if self.is_main and (self.output_dir / name).exists():
                    (self.output_dir / name).unlink()
        self.accelerator.wait_for_everyone()

    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.state.global_step,
            disable=not (self.is_main and self.training["progress_bar"]),
            desc="train",
            dynamic_ncols=True,
        )

    def _run_epoch(self, loop: _LoopState, progress: Any) -> None:
        """The rest of the current epoch (all of it, unless resuming mid-epoch or stopping early)."""
        epoch = self.state.global_step // self.steps_per_epoch
        step_in_epoch = self.state.global_step % self.steps_per_epoch
        self.state.epoch = epoch
        iterator = iter(self._loader(epoch, step_in_epoch * self.accumulation))
        while step_in_epoch < self.steps_per_epoch and self.state.global_step < self.total_steps:
            record = self._train_step(iterator)
            step_in_epoch += 1
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", refresh=False)
            if not record["skipped"]:
                loop.epoch_losses.append(record["loss"])
            loop.window.append(record)
            events = self._step_events(self.state.global_step, step_in_epoch == self.steps_per_epoch)
            self._after_step(events, epoch, loop)
            if loop.stop:
                break

    def _step_events(self, step: int, epoch_end: bool) -> _StepEvents:
        """What is due after optimizer step ``step``: logging, validation, a checkpoint."""
        eval_steps = self.training["eval_steps"]
        save_steps = self.training["save_steps"]
        logging_steps = max(int(self.training["logging_steps"]), 1)
        final_step = step == self.total_steps
        due_eval = (eval_steps is not None and step % eval_steps == 0) or (eval_steps is None and epoch_end)
        scheduled_save = (save_steps is not None and step % save_steps == 0) or (
            save_steps is None and (due_eval or epoch_end)
        )
        return _StepEvents(
            epoch_end=epoch_end,
            final_step=final_step,
            due_eval=due_eval,
            scheduled_save=scheduled_save,
            # checkpoints are logging boundaries too, so a resumed run logs the same lines
            log=step % logging_steps == 0 or epoch_end or final_step or scheduled_save,
        )

    def _after_step(self, events: _StepEvents, epoch: int, loop: _LoopState) -> None:
        step = self.state.global_step
        if events.log:
            self._log_train(loop.window, step, epoch)
            loop.window = []
        results = self._maybe_validate(events, step, epoch, loop)
        self._maybe_save(events, step, loop)
        if events.epoch_end or events.final_step or loop.stop:
            self._end_epoch(events, epoch, step, results, loop)

    def _maybe_validate(
        self, events: _StepEvents, step: int, epoch: int, loop: _LoopState
    ) -> dict[str, Any] | None:
        """Validate when due (and at the last step); early stopping is decided here."""
        if self.eval_dataset is None or not (events.due_eval or events.final_step):
            return None
        results = self._validate(step, epoch)
        patience = self.training["early_stopping_patience"]
        if patience is not None and self.state.evals_without_improvement >= patience:
            self.state.stopped_early = True
            loop.stop = True
        return results

    def _maybe_save(self, events: _StepEvents, step: int, loop: _LoopState) -> None:
        if not (events.scheduled_save or loop.pending_save or events.final_step or loop.stop):
            return
        if self.state.consecutive_nonfinite == 0:
            self.save_checkpoint()
            loop.last_saved_step = step
            loop.pending_save = False
        else:
            loop.pending_save = True  # never checkpoint in the middle of a NaN streak

    def _end_epoch(
        self, events: _StepEvents, epoch: int, step: int, results: dict[str, Any] | None, loop: _LoopState
    ) -> None:
        """The epoch's summary line, then a push to the Hub every ``hub.push_every_epochs`` epochs."""
        self._epoch_summary(epoch, step, loop.epoch_losses, results, _now() - loop.epoch_start)
        loop.epoch_losses = []
        loop.epoch_start = _now()
        push_every = self.hub.get("push_every_epochs")
        if (
            events.epoch_end
            and push_every
            and (epoch + 1) % push_every == 0
            and not events.final_step
            and not loop.stop
        ):
            self.push_to_hub(revision=self.hub.get("revision"), final=False)

    def _finish(self) -> dict[str, Any]:
        """The run's summary (after the final push, when a Hub repo is set)."""
        summary = {
            "global_step": self.state.global_step,
            "best_metric": self.state.best_metric,
            "best_step": self.state.best_step,
            "metric": self.metric_name,
            "stopped_early": self.state.stopped_early,
            "skipped_steps": self.state.skipped_steps,
            "output_dir": str(self.output_dir),
        }
        if self.hub.get("repo_id"):
            summary["hub_url"] = self.push_to_hub(final=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return summary

    def _log_train(self, window: list[dict[str, Any]], step: int, epoch: int) -> None:
        good = [r for r in window if not r["skipped"]]
        entry: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "lr": window[-1]["lr"],
            "skipped": len(window) - len(good),
            "samples_seen": self.state.samples_seen,
        }
        if good:
            entry["loss"] = float(np.mean([r["loss"] for r in good]))
            norms = [r["grad_norm"] for r in good if r["grad_norm"] is not None]
            if norms:
                entry["grad_norm"] = float(np.mean(norms))
            per_source = [r["per_source"] for r in good if r["per_source"] is not None]
            if per_source:
                means = np.mean(np.asarray(per_source), axis=0)
                names = (
                    self.source_names
                    if len(self.source_names) == len(means)
                    else [str(i) for i in range(len(means))]
                )
                entry["loss_per_source"] = {name: float(v) for name, v in zip(names, means, strict=True)}
        self._log_line(self.output_dir / TRAIN_LOG, entry)
        if self.accelerator.log_with:
            scalars = {
                f"train/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and k != "step"
            }
            for name, value in (entry.get("loss_per_source") or {}).items():
                scalars[f"train/loss_{name}"] = value
            self.accelerator.log(scalars, step=step)

    def _validate(self, step: int, epoch: int) -> dict[str, Any]:
        started = _now()
        results = self.evaluate()
        value = results.get(self.metric_name)
        improved = self._improved(value)
        if improved:
            self.state.best_metric = float(value)
            self.state.best_step = step
            self.state.evals_without_improvement = 0
            self._save_best(results)
        else:
            self.state.evals_without_improvement += 1
        reduced = self.schedule.observe(value) if value is not None else False
        entry = {
            "step": step,
            "epoch": epoch,
            **results,
            "best": self.state.best_metric,
            "improved": improved,
            "lr_reduced": reduced,
            "seconds": _now() - started,
        }
        self.state.last_eval = {
            k: v for k, v in entry.items() if isinstance(v, (int, float, bool, type(None)))
        }
        self.history.append(entry)
        self._log_line(self.output_dir / EVAL_LOG, entry)
        if self.accelerator.log_with:
            self.accelerator.log(
                {f"eval/{k}": v for k, v in results.items() if isinstance(v, (int, float))}, step=step
            )
        return results

    def _epoch_summary(
        self, epoch: int, step: int, losses: list[float], results: dict[str, Any] | None, seconds: float
    ) -> None:
        parts = [f"epoch {epoch + 1}", f"step {step}/{self.total_steps}"]
        parts.append(f"train loss {np.mean(losses):.4f}" if losses else "train loss n/a")
        if results:
            value = results.get(self.metric_name)
            unit = "" if self.metric_name == "loss" else " dB"
            parts.append(
                f"val {self.metric_name} {value:.2f}{unit}"
                if value is not None
                else f"val {self.metric_name} n/a"
            )
            if self.state.best_metric is not None:
                parts.append(f"best {self.state.best_metric:.2f}{unit} @ {self.state.best_step}")
        parts.append(f"lr {self.schedule.lr_at(max(step - 1, 0)):.3g}")
        if self.state.skipped_steps:
            parts.append(f"skipped {self.state.skipped_steps}")
        parts.append(f"{seconds:.1f}s")
        self.accelerator.print(" | ".join(parts))


def _link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link (files of a checkpoint are never modified in place), copy where links fail."""
    try:
        os.link(source, destination)
    except OSError:
        import shutil

        shutil.copy2(source, destination)


def train(
    config: dict[str, dict[str, Any]],
    output_dir: str | os.PathLike[str],
    *,
    resume: bool | str | os.PathLike[str] = False,
    push_to_hub: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Functional entry: ``Trainer(config, output_dir, ...).train()``."""
    return Trainer(config, output_dir, resume=resume, push_to_hub=push_to_hub, **kwargs).train()


__all__ = [
    "NonFiniteLossError",
    "PretrainedLoadError",
    "SetupMemoryError",
    "Trainer",
    "TrainerState",
    "build_model",
    "seed_everything",
    "step_seed",
    "train",
]
