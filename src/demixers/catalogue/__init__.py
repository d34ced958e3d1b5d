"""Official checkpoints by name: the catalogue of releases, their download, conversion and cache.

* `resolve_model` (also ``demixers.resolve_model``): ``"htdemucs_ft"`` -> a local model folder
  (downloaded with resume into the Hugging Face cache root, SHA-256 verified, converted once with
  the family's converter, cached by source checksum and converter version); any other name is
  returned unchanged;
* `get_catalogue` / `use_catalogue` / `Catalogue`: the entries (`demixers.catalogue.entries` holds
  the built-in ones), and installing another catalogue of the same schema (a mirror's, the tests');
* commands: ``demixers models`` (`models_cli`), ``demixers download`` (`download_cli`),
  ``demixers publish`` (`publish_cli`).
"""

from typing import TYPE_CHECKING

from ..utils.lazy import make_lazy

if TYPE_CHECKING:
    from .download import MIRROR_ENVIRONMENT_VARIABLE, ChecksumError, OfflineError, cache_root
    from .resolve import (
        converted_path,
        converter_version,
        get_catalogue,
        lookup,
        prepare,
        resolve_model,
        use_catalogue,
    )
    from .schema import Catalogue, CatalogueEntry, ReleaseFile

make_lazy(
    __name__,
    {
        "MIRROR_ENVIRONMENT_VARIABLE": ".download",
        "ChecksumError": ".download",
        "OfflineError": ".download",
        "cache_root": ".download",
        "converted_path": ".resolve",
        "converter_version": ".resolve",
        "get_catalogue": ".resolve",
        "lookup": ".resolve",
        "prepare": ".resolve",
        "resolve_model": ".resolve",
        "use_catalogue": ".resolve",
        "Catalogue": ".schema",
        "CatalogueEntry": ".schema",
        "ReleaseFile": ".schema",
    },
)

__all__ = [
    "MIRROR_ENVIRONMENT_VARIABLE",
    "Catalogue",
    "CatalogueEntry",
    "ChecksumError",
    "OfflineError",
    "ReleaseFile",
    "cache_root",
    "converted_path",
    "converter_version",
    "get_catalogue",
    "lookup",
    "prepare",
    "resolve_model",
    "use_catalogue",
]
