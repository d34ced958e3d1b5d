"""Common tests every model family reuses.

Subclass ``SourceSeparationModelTesterMixin`` in a pytest class and provide:

* ``model_class``: the ``...ForSourceSeparation`` class;
* ``get_config(self)``: a tiny config (runs in well under a second per forward on 2 cores);
* optionally ``input_lengths`` (lengths to try, odd ones included), ``batch_size``,
  ``atol``/``rtol`` for numerical comparisons, ``invalid_config_kwargs`` (a list of
  ``(kwargs, field_name)`` pairs that must raise ``ValueError`` naming the field) and
  ``remote_code_tolerance``.

Everything is asserted with numbers: shapes, bitwise/tolerance equality, gradient coverage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

import demixers  # noqa: F401  (registers the Auto classes)

# A fresh interpreter that must not be able to import demixers (remote-code test).
_BLOCK_DEMIXERS = textwrap.dedent(
    """
    import importlib.abc, sys

    class _BlockDemixers(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "demixers" or name.startswith("demixers."):
                raise ModuleNotFoundError(f"demixers is deliberately not importable here ({name})")
            return None

    sys.meta_path.insert(0, _BlockDemixers())
    """
)


class SourceSeparationModelTesterMixin:
    model_class: ClassVar[type[PreTrainedModel]]
    input_lengths: ClassVar[tuple[int, ...]] = (1001, 1600)
    batch_size: ClassVar[int] = 2
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = []
    remote_code_tolerance: ClassVar[float] = 1e-6

    # -- hooks ---------------------------------------------------------------------------------

    def get_config(self) -> PretrainedConfig:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------

    def make_model(self, config: PretrainedConfig | None = None, seed: int = 0) -> PreTrainedModel:
        torch.manual_seed(seed)
        model = self.model_class(config or self.get_config())
        return model.eval()

    def make_inputs(
        self,
        config: PretrainedConfig,
        batch_size: int | None = None,
        length: int | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size or self.batch_size, config.audio_channels, length or self.input_lengths[-1])
        return 0.1 * torch.randn(shape, generator=generator)

    def assert_close(self, actual: torch.Tensor, expected: torch.Tensor, atol: float | None = None) -> None:
        torch.testing.assert_close(actual, expected, atol=self.atol if atol is None else atol, rtol=self.rtol)

    # -- contract ------------------------------------------------------------------------------

    def test_config_contract(self) -> None:
        config = self.get_config()
        assert isinstance(config.sampling_rate, int) and config.sampling_rate > 0
        assert isinstance(config.audio_channels, int) and config.audio_channels > 0
        assert len(config.source_names) >= 1
        assert len(set(config.source_names)) == len(config.source_names)
        assert all(isinstance(name, str) and name for name in config.source_names)
        rebuilt = type(config).from_dict(config.to_dict())
        assert rebuilt.to_dict() == config.to_dict()

    def test_config_declares_the_keys_the_pipeline_and_trainer_read(self, tmp_path: Path) -> None:
        from demixers.utils.model_contract import is_permutation_invariant

        config = self.get_config()
        assert isinstance(config.permutation_invariant, bool)
        assert is_permutation_invariant(config) is config.permutation_invariant
        config.save_pretrained(tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        for key in ("sampling_rate", "audio_channels", "source_names", "permutation_invariant"):
            assert key in saved, f"config.json lacks {key}"
            assert saved[key] == getattr(config, key), key
        # a real field: flipping it survives a save/load round trip
        values = {**saved, "permutation_invariant": not config.permutation_invariant}
        (tmp_path / "config.json").write_text(json.dumps(values))
        flipped = AutoConfig.from_pretrained(tmp_path).permutation_invariant
        assert flipped is (not config.permutation_invariant)

    def test_default_config_builds_through_auto_config(self) -> None:
        config_class = self.model_class.config_class
        default = AutoConfig.for_model(config_class.model_type)
        assert type(default) is config_class
        assert default.to_dict() == config_class().to_dict()

    def test_invalid_config_values_raise_value_error_naming_the_field(self) -> None:
        config_class = self.model_class.config_class
        for kwargs, field in self.invalid_config_kwargs:
            with pytest.raises(ValueError, match=field):
                config_class(**kwargs)

    def test_output_shape_and_length_match_input(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        for length in self.input_lengths:
            inputs = self.make_inputs(config, length=length)
            with torch.no_grad():
                output = model(input_values=inputs)
            expected = (inputs.shape[0], len(config.source_names), config.audio_channels, length)
            assert tuple(output.audio_values.shape) == expected, f"length {length}"
            assert output.audio_values.dtype == torch.float32
            assert torch.isfinite(output.audio_values).all()
            assert output.loss is None

    def test_labels_give_finite_scalar_loss(self) -> None:
        config = self.get_config()
        model = self.make_model(config).train()
        inputs = self.make_inputs(config)
        labels = 0.1 * torch.randn(inputs.shape[0], len(config.source_names), *inputs.shape[1:])
        output = model(input_values=inputs, labels=labels)
        assert output.loss is not None and output.loss.dim() == 0
        assert torch.isfinite(output.loss)
        assert output.loss.requires_grad

    def test_silence_gives_finite_output(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        with torch.no_grad():
            output = model(input_values=torch.zeros(1, config.audio_channels, self.input_lengths[-1]))
        assert torch.isfinite(output.audio_values).all()

    def test_batch_equals_single_items(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        inputs = self.make_inputs(config, batch_size=3)
        with torch.no_grad():
            batched = model(input_values=inputs).audio_values
            for index in range(inputs.shape[0]):
                single = model(input_values=inputs[index : index + 1]).audio_values
                self.assert_close(batched[index : index + 1], single)

    def test_eval_forward_is_deterministic(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        inputs = self.make_inputs(config)
        with torch.no_grad():
            first = model(input_values=inputs).audio_values
            second = model(input_values=inputs).audio_values
        assert torch.equal(first, second)

    def test_bad_inputs_raise(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        length = self.input_lengths[-1]
        with torch.no_grad():
            with pytest.raises(ValueError):
                model(input_values=torch.zeros(1, config.audio_channels, 0))
            with pytest.raises(ValueError):
                model(input_values=torch.zeros(1, 1, config.audio_channels, length))
            with pytest.raises(ValueError):
                model(input_values=torch.zeros(1, config.audio_channels + 2, length))
            bad = torch.zeros(1, config.audio_channels, length)
            bad[0, 0, length // 2] = float("nan")
            with pytest.raises(ValueError):
                model(input_values=bad)
            bad[0, 0, length // 2] = float("inf")
            with pytest.raises(ValueError):
                model(input_values=bad)

    def test_return_dict_true_false_and_config_default(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        inputs = self.make_inputs(config)
        labels = 0.1 * torch.randn(inputs.shape[0], len(config.source_names), *inputs.shape[1:])
        with torch.no_grad():
            output = model(input_values=inputs, labels=labels, return_dict=True)
            as_tuple = model(input_values=inputs, labels=labels, return_dict=False)
            no_loss = model(input_values=inputs, return_dict=False)
            assert isinstance(output, ModelOutput) and output.loss is not None
            assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
            assert torch.equal(as_tuple[0], output.loss) and torch.equal(as_tuple[1], output.audio_values)
            assert isinstance(no_loss, tuple) and len(no_loss) == 1
            assert torch.equal(no_loss[0], output.audio_values)
            # return_dict=None follows config.use_return_dict, as in transformers
            model.config.return_dict = False
            try:
                default = model(input_values=inputs)
            finally:
                model.config.return_dict = True
            assert isinstance(default, tuple) and torch.equal(default[0], output.audio_values)
            assert isinstance(model(input_values=inputs), ModelOutput)

    def test_padding_mask_is_honoured(self) -> None:
        """Padded items are separated at their own length, zero in the padding, and padding never
        counts in the loss (garbage there changes nothing)."""
        config = self.get_config()
        model = self.make_model(config)
        length = self.input_lengths[-1]
        short = (2 * length) // 3
        inputs = self.make_inputs(config, batch_size=2, length=length)
        labels = 0.1 * torch.randn(2, len(config.source_names), config.audio_channels, length)
        padding_mask = torch.ones(2, length, dtype=torch.long)
        padding_mask[1, short:] = 0
        with torch.no_grad():
            full = model(input_values=inputs, padding_mask=torch.ones(2, length, dtype=torch.long))
            assert torch.equal(full.audio_values, model(input_values=inputs).audio_values)
            clean_inputs, clean_labels = inputs.clone(), labels.clone()
            clean_inputs[1, :, short:] = 0
            clean_labels[1, ..., short:] = 0
            dirty_inputs, dirty_labels = inputs.clone(), labels.clone()
            dirty_inputs[1, :, short:] = 0.5 * torch.randn(config.audio_channels, length - short)
            dirty_labels[1, ..., short:] = 3.0
            clean = model(input_values=clean_inputs, labels=clean_labels, padding_mask=padding_mask)
            dirty = model(input_values=dirty_inputs, labels=dirty_labels, padding_mask=padding_mask)
            alone = model(input_values=inputs[1:, :, :short]).audio_values
        assert tuple(dirty.audio_values.shape) == (2, len(config.source_names), config.audio_channels, length)
        assert not dirty.audio_values[1, ..., short:].any()
        self.assert_close(dirty.audio_values[1:, ..., :short], alone)
        self.assert_close(dirty.audio_values[:1], full.audio_values[:1])
        torch.testing.assert_close(dirty.loss, clean.loss, atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="padding_mask"):
            model(input_values=inputs, padding_mask=torch.ones(2, length - 1))
        with pytest.raises(TypeError, match="padding_mask"):
            model(input_values=inputs, padding_mask=[[1] * length] * 2)

    def test_mistakes_raise_the_same_exception_types_in_every_family(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        length = self.input_lengths[-1]
        channels = config.audio_channels
        with torch.no_grad():
            with pytest.raises(TypeError, match="input_values"):
                model(input_values=[[0.0] * length])
            with pytest.raises(TypeError, match=r"int64|dtype|floating"):
                model(input_values=torch.zeros(1, channels, length, dtype=torch.int64))
            with pytest.raises(ValueError, match=re.escape(str((1, 1, channels, length)))):
                model(input_values=torch.zeros(1, 1, channels, length))
            with pytest.raises(ValueError, match=str(channels + 2)):
                model(input_values=torch.zeros(1, channels + 2, length))
            with pytest.raises(ValueError, match=r"empty|zero"):
                model(input_values=torch.zeros(1, channels, 0))
            with pytest.raises(ValueError, match="labels"):
                model(input_values=torch.zeros(1, channels, length), labels=torch.zeros(1, 1, 1, 3))

    # -- training ------------------------------------------------------------------------------

    def test_gradients_reach_every_parameter(self) -> None:
        config = self.get_config()
        model = self.make_model(config).train()
        inputs = self.make_inputs(config)
        labels = 0.1 * torch.randn(inputs.shape[0], len(config.source_names), *inputs.shape[1:])
        model(input_values=inputs, labels=labels).loss.backward()
        missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing}"
        not_finite = [
            name
            for name, p in model.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        assert not not_finite, f"parameters with non-finite gradient: {not_finite}"
        zero = [
            name for name, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0
        ]
        assert not zero, f"parameters whose gradient is exactly zero: {zero}"

    def test_init_weights_covers_every_module(self) -> None:
        model = self.make_model()
        uncovered = []
        for name, module in model.named_modules():
            own = list(module.named_parameters(recurse=False))
            if not own:
                continue
            with torch.no_grad():
                for _, parameter in own:
                    parameter.fill_(float("nan"))
            model._init_weights(module)
            still_nan = [f"{name}.{p_name}" for p_name, p in own if torch.isnan(p).any()]
            uncovered.extend(still_nan)
        assert not uncovered, f"_init_weights leaves these parameters untouched: {uncovered}"

    # -- persistence ---------------------------------------------------------------------------

    def test_save_load_round_trip_is_exact(self, tmp_path: Path) -> None:
        config = self.get_config()
        model = self.make_model(config)
        inputs = self.make_inputs(config)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors"
        loaded, info = self.model_class.from_pretrained(tmp_path, output_loading_info=True)
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            assert not info.get(key), f"{key}: {info.get(key)}"
        loaded.eval()
        original_state = model.state_dict()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, original_state[key]), key
        with torch.no_grad():
            assert torch.equal(
                model(input_values=inputs).audio_values, loaded(input_values=inputs).audio_values
            )

    def test_auto_classes_round_trip(self, tmp_path: Path) -> None:
        config = self.get_config()
        model = self.make_model(config)
        model.save_pretrained(tmp_path)
        auto_config = AutoConfig.from_pretrained(tmp_path)
        assert type(auto_config) is type(config)
        auto_model = AutoModel.from_pretrained(tmp_path).eval()
        assert type(auto_model) is self.model_class
        inputs = self.make_inputs(config)
        with torch.no_grad():
            assert torch.equal(
                model(input_values=inputs).audio_values, auto_model(input_values=inputs).audio_values
            )

    def test_loading_is_strict(self, tmp_path: Path) -> None:
        """A missing, unexpected or reshaped tensor is a ValueError naming it (never random weights)."""
        from safetensors.torch import load_file, save_file

        model = self.make_model()
        model.save_pretrained(tmp_path / "full")
        state = load_file(tmp_path / "full" / "model.safetensors")
        victim = max(state, key=lambda key: state[key].numel())  # the largest tensor, surely a weight
        edits = {
            "missing": ({key: value for key, value in state.items() if key != victim}, victim),
            "unexpected": ({**state, "surplus.weight": torch.zeros(2)}, "surplus.weight"),
            "mismatched": ({**state, victim: state[victim].flatten()[:1].clone()}, victim),
        }
        for label, (edited, key) in edits.items():
            folder = tmp_path / label
            folder.mkdir()
            (folder / "config.json").write_bytes((tmp_path / "full" / "config.json").read_bytes())
            save_file(edited, folder / "model.safetensors", metadata={"format": "pt"})
            with pytest.raises(ValueError, match=re.escape(key)) as raised:
                AutoModel.from_pretrained(folder)
            message = str(raised.value)
            assert label in message and str(folder) in message and "\n" not in message, message
        lenient, info = self.model_class.from_pretrained(
            tmp_path / "missing", strict=False, output_loading_info=True
        )
        assert type(lenient) is self.model_class and victim in info["missing_keys"]

    def test_remote_code_loads_without_demixers(self, tmp_path: Path) -> None:
        config = self.get_config()
        model = self.make_model(config)
        type(config).register_for_auto_class()
        self.model_class.register_for_auto_class("AutoModel")
        try:
            model.save_pretrained(tmp_path / "model")
        finally:
            # registration is a class attribute: undo it so other tests save plain folders
            type(config)._auto_class = None
            self.model_class._auto_class = None
        saved_config = json.loads((tmp_path / "model" / "config.json").read_text())
        assert "auto_map" in saved_config and "AutoModel" in saved_config["auto_map"]
        for source in (tmp_path / "model").glob("*.py"):
            text = source.read_text()
            assert not re.search(r"^\s*(from|import)\s+demixers\b", text, re.M), (
                f"{source.name} imports demixers"
            )
            assert not re.search(r"^\s*from\s+\.\.", text, re.M), (
                f"{source.name} uses a parent-relative import"
            )

        inputs = self.make_inputs(config)
        np.save(tmp_path / "inputs.npy", inputs.numpy())
        with torch.no_grad():
            np.save(tmp_path / "expected.npy", model(input_values=inputs).audio_values.numpy())
        script = _BLOCK_DEMIXERS + textwrap.dedent(
            f"""
            import numpy as np, torch
            from transformers import AutoModel
            model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
            assert "demixers" not in type(model).__module__.split(".")[0], type(model).__module__
            inputs = torch.from_numpy(np.load({str(tmp_path / "inputs.npy")!r}))
            with torch.no_grad():
                actual = model(input_values=inputs).audio_values.numpy()
            expected = np.load({str(tmp_path / "expected.npy")!r})
            print("MAXDIFF", float(np.abs(actual - expected).max()))
            """
        )
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env["HF_HUB_OFFLINE"] = "1"
        env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        max_diff = float(result.stdout.split("MAXDIFF")[-1])
        assert max_diff <= self.remote_code_tolerance
