"""Registration of the families and the ``audio-source-separation`` task with transformers, on first use.

``import demixers`` must stay light (the CLI's ``--help`` and ``import demixers.evaluation`` should not
pay for transformers and nine model families), yet ``import demixers`` followed by
``AutoModel.from_pretrained(<demixers folder>)`` or ``pipeline("audio-source-separation", ...)`` must
work. transformers only accepts real classes in its registries (`AutoConfig.register` checks the
config class), so the classes cannot be registered before they are imported. Instead,
`install` arms the four registries that those calls read:

* ``CONFIG_MAPPING`` (AutoConfig), ``MODEL_MAPPING`` (AutoModel) and ``FEATURE_EXTRACTOR_MAPPING``
  (AutoFeatureExtractor) keep registered classes in a plain ``_extra_content`` dict;
* the pipeline registry keeps its tasks in ``PIPELINE_REGISTRY.supported_tasks``.

Each of those dicts is swapped for a `_RegisterOnRead` dict with the same items, whose first read
(``in``, ``[]``, ``items()``...) imports the families and registers them, then answers. The swap
happens as soon as the transformers module that owns the registry is imported (a meta path hook
that waits for the module to finish executing), or at once when it already was, so no order of
imports between demixers and transformers is missed. Importing the transformers modules themselves is
left to the user's own code: nothing here imports transformers until a registry is read.

A read that happens while a demixers or transformers module is still executing (a class body that
consults the registry, say) does not register: importing the families then could find a half
initialised module. The registry stays armed and the next read registers.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.abc imports typing machinery this light module does without at run time
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec

PIPELINE_TASK = "audio-source-separation"

# transformers module -> how to arm the registry it owns, once it has executed
_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"
_FEATURE_EXTRACTION_AUTO = "transformers.models.auto.feature_extraction_auto"
_PIPELINES = "transformers.pipelines"

_lock = threading.RLock()
_registered = False
_registering_thread: int | None = None  # the thread running register_all


def register_model_family(config_class: type, model_class: type) -> None:
    """Make a family loadable through the Auto classes and the pipeline (idempotent)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    from .feature_extraction_separation import SourceSeparationFeatureExtractor

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoFeatureExtractor.register(config_class, SourceSeparationFeatureExtractor, exist_ok=True)


def register_all() -> None:
    """Register every family with the Auto classes and the task with the pipeline registry (once)."""
    global _registered, _registering_thread
    with _lock:
        if _registered or _registering_thread is not None:  # done, or this thread is doing it
            return
        _registering_thread = threading.get_ident()
        try:
            from transformers import AutoModel
            from transformers.pipelines import PIPELINE_REGISTRY

            from .bundled import DEFAULT_MODEL_DIR
            from .modeling import MODEL_FAMILIES
            from .pipelines.audio_source_separation import AudioSourceSeparationPipeline

            for config_class, model_class in MODEL_FAMILIES:
                register_model_family(config_class, model_class)
            # The bundled default model is a local folder: transformers loads it as-is, without the Hub.
            PIPELINE_REGISTRY.register_pipeline(
                PIPELINE_TASK,
                pipeline_class=AudioSourceSeparationPipeline,
                pt_model=AutoModel,
                default={"model": (str(DEFAULT_MODEL_DIR), None)},
                type="audio",
            )
            _registered = True
        finally:
            _registering_thread = None


def is_registered() -> bool:
    return _registered


def _imports_in_progress() -> bool:
    """Whether a demixers or transformers module is executing right now (in any frame of any thread)."""
    for name, module in list(sys.modules.items()):
        if not (name.startswith(("demixers.", "transformers.")) or name in ("demixers", "transformers")):
            continue
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


def ensure_registered() -> None:
    """`register_all` unless done, or unless a module is still executing (then a later read does it).

    A read made by the registration itself (transformers' ``register`` consults the registry) answers
    at once; a read from another thread while it runs waits for it."""
    if _registered:
        return
    running = _registering_thread
    if running is not None:
        if running != threading.get_ident():
            with _lock:  # held by the registering thread until it is done
                pass
        return
    if _imports_in_progress():
        return
    register_all()


class _RegisterOnRead(dict):
    """A registry dict whose reads first register the demixers families (writes do not)."""

    def __contains__(self, key: object) -> bool:
        ensure_registered()
        return super().__contains__(key)

    def __getitem__(self, key: Any) -> Any:
        ensure_registered()
        return super().__getitem__(key)

    def __iter__(self):
        ensure_registered()
        return super().__iter__()

    def __len__(self) -> int:
        ensure_registered()
        return super().__len__()

    def get(self, key: Any, default: Any = None) -> Any:
        ensure_registered()
        return super().get(key, default)

    def keys(self):
        ensure_registered()
        return super().keys()

    def values(self):
        ensure_registered()
        return super().values()

    def items(self):
        ensure_registered()
        return super().items()


def _arm_extra_content(mapping: Any) -> None:
    if not isinstance(mapping._extra_content, _RegisterOnRead):
        mapping._extra_content = _RegisterOnRead(mapping._extra_content)


def _arm_config_auto(module: ModuleType) -> None:
    _arm_extra_content(module.CONFIG_MAPPING)


def _arm_model_auto(module: ModuleType) -> None:
    _arm_extra_content(module.MODEL_MAPPING)


def _arm_feature_extraction_auto(module: ModuleType) -> None:
    _arm_extra_content(module.FEATURE_EXTRACTOR_MAPPING)


def _arm_pipelines(module: ModuleType) -> None:
    registry = module.PIPELINE_REGISTRY
    if not isinstance(registry.supported_tasks, _RegisterOnRead):
        registry.supported_tasks = _RegisterOnRead(registry.supported_tasks)


_ARMERS: dict[str, Callable[[ModuleType], None]] = {
    _CONFIG_AUTO: _arm_config_auto,
    _MODEL_AUTO: _arm_model_auto,
    _FEATURE_EXTRACTION_AUTO: _arm_feature_extraction_auto,
    _PIPELINES: _arm_pipelines,
}


class _ArmAfterExecLoader:
    """Wraps a module's loader: executes the module, then arms the registry it defines."""

    def __init__(self, loader: Loader, armer: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._armer = armer

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # transformers' lazy packages replace themselves in sys.modules: arm the final object
        self._armer(sys.modules.get(module.__name__, module))

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, is_package...
        return getattr(self._loader, name)


class _ArmRegistriesFinder:
    """Finds nothing itself: hands the specs of the registry modules back with a wrapping loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        armer = _ARMERS.get(fullname)
        if armer is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ArmAfterExecLoader(spec.loader, armer)
                return spec
        return None


_FINDER = _ArmRegistriesFinder()


def install() -> None:
    """Arm the registries already imported and hook those imported later (idempotent, imports nothing)."""
    with _lock:
        if not any(finder is _FINDER for finder in sys.meta_path):
            sys.meta_path.insert(0, _FINDER)
        for name, armer in _ARMERS.items():
            module = sys.modules.get(name)
            if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
                armer(module)
