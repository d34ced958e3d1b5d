"""Timings of the download/convert/cache flow on the loopback file server (for the README).

``OMP_NUM_THREADS=1 python -m tests.catalogue.measure_flow``: builds the test releases
(`tests.catalogue.releases`), serves them on 127.0.0.1, then times, per alias, the first
`resolve_model` (download, verify, convert) and a cached one (median of 5, no request), and the
pipeline load from the folder; then an 84 MB file's download + SHA-256 check, cached, and resumed
after a cut at 40 MB.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="demixers-measure-"))
    os.environ["HF_HOME"] = str(root / "hf_home")
    from transformers import pipeline

    from demixers.catalogue.download import fetch_url_file
    from demixers.catalogue.resolve import resolve_model, use_catalogue
    from demixers.catalogue.schema import ReleaseFile
    from tests.catalogue.file_server import LoopbackFileServer
    from tests.catalogue.releases import build_test_releases

    releases = build_test_releases(root / "releases")
    server = LoopbackFileServer().start()
    for path, data in releases.files.items():
        server.add(path, data)
    os.environ["DEMIXERS_MIRROR_URL"] = server.url
    try:
        with use_catalogue(releases.catalogue()):
            for alias in ("htdemucs", "htdemucs_ft", "mossformer_8k"):
                before = len(server.requests)
                started = time.perf_counter()
                folder = resolve_model(alias, quiet=True)
                first = time.perf_counter() - started
                started = time.perf_counter()
                pipeline("audio-source-separation", model=folder)
                first_load = time.perf_counter() - started
                requests = len(server.requests) - before
                cached = []
                for _ in range(5):
                    started = time.perf_counter()
                    resolve_model(alias)
                    cached.append(time.perf_counter() - started)
                started = time.perf_counter()
                pipeline("audio-source-separation", model=folder)
                cached_load = time.perf_counter() - started
                again = len(server.requests) - before - requests
                print(
                    f"{alias}: first resolve {first:.3f} s ({requests} requests) + pipeline load "
                    f"{first_load:.3f} s; cached resolve {statistics.median(cached) * 1000:.2f} ms "
                    f"({again} requests) + pipeline load {cached_load:.3f} s"
                )
        data = os.urandom(84_000_000)
        server.add("/demucs/hybrid_transformer/big.th", data)
        url = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/big.th"
        release_file = ReleaseFile.from_dict("big", {"url": url, "sha256": hashlib.sha256(data).hexdigest()})
        started = time.perf_counter()
        path = fetch_url_file("big", release_file, quiet=True)
        first = time.perf_counter() - started
        started = time.perf_counter()
        fetch_url_file("big", release_file, quiet=True)
        cached = time.perf_counter() - started
        path.unlink()
        server.cut_after["/demucs/hybrid_transformer/big.th"] = 40_000_000
        server.clear_log()
        started = time.perf_counter()
        fetch_url_file("big", release_file, quiet=True)
        resumed = time.perf_counter() - started
        print(
            f"84 MB file: download + sha256 {first:.2f} s; cached {cached * 1000:.2f} ms; cut at 40 MB and "
            f"resumed {resumed:.2f} s, Range headers {[entry[2] for entry in server.requests]}"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
