"""Downloading a release's files into the Hugging Face cache root, verified before use.

* Hub files go through ``huggingface_hub.hf_hub_download`` (its cache layout, its locks, its resume);
  the bytes are then checked against the entry's ``sha256``, or the Hub's LFS digest of the file (the
  name of the blob the cache stores it under).
* Files of other hosts go to ``$HF_HOME/demixers/downloads/<host>/<url path>``: streamed to
  ``<file>.part`` (a partial file is resumed with an HTTP ``Range`` request, also when the connection
  drops mid-file), hashed, and only then moved into place with ``os.replace``. A checksum mismatch
  deletes the download and raises an error naming the alias, the URL, the expected and the actual
  digest. A file lock per file serialises concurrent processes downloading the same file.
* ``DEMIXERS_MIRROR_URL`` (for tests and mirrors) replaces the scheme and host of every non-Hub URL,
  keeping its path and query; Hub files follow ``HF_ENDPOINT`` as usual.
* ``checksum_from: github-release``: the digest GitHub's REST API publishes for a release asset
  (``api.github.com/repos/OWNER/REPO/releases/tags/TAG``, then its paged asset list), read before
  the download; an asset without a digest is refused rather than used unverified.
* ``HF_HUB_OFFLINE=1``: nothing is requested; a file that is not in the cache is an error naming the
  alias.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from .schema import SHA256_PATTERN as SHA256_HEX
from .schema import CatalogueEntry, ReleaseFile

MIRROR_ENVIRONMENT_VARIABLE = "DEMIXERS_MIRROR_URL"
CHUNK_SIZE = 1 << 20
MAX_ATTEMPTS = 5  # a dropped connection is resumed this many times before giving up
TIMEOUT_SECONDS = 60.0
USER_AGENT = "demixers-catalogue"


class OfflineError(ValueError):
    """A file is needed that is not in the cache while ``HF_HUB_OFFLINE`` is set."""


class ChecksumError(ValueError):
    """Downloaded bytes whose SHA-256 is not the expected one (the download was deleted)."""


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, but read now (not at its import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_root() -> Path:
    """``$HF_HOME/demixers``: the Hugging Face cache root (``HF_HOME``, default ``~/.cache/huggingface``)."""
    home = os.environ.get("HF_HOME")
    if not home:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(base, "huggingface")
    return Path(home).expanduser() / "demixers"


def effective_url(url: str) -> str:
    """The URL to request: ``DEMIXERS_MIRROR_URL`` (if set) in place of the original scheme and host."""
    mirror = os.environ.get(MIRROR_ENVIRONMENT_VARIABLE, "").strip()
    if not mirror:
        return url
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValueError(
            f"{MIRROR_ENVIRONMENT_VARIABLE} must be an http(s)://host[:port] URL, got {mirror!r}"
        )
    original = urlsplit(url)
    path = base.path.rstrip("/") + original.path
    return urlunsplit((base.scheme, base.netloc, path, original.query, ""))


def download_path(release_file: ReleaseFile) -> Path:
    """Where a non-Hub file is cached: ``downloads/<host>/<path>[/<query file name>]``."""
    parts = urlsplit(str(release_file.url))
    segments = [quote(parts.netloc, safe="")]
    segments += [
        quote(part, safe="") for part in PurePosixPath(parts.path).parts if part not in ("/", "..", ".")
    ]
    if parts.query:
        # ModelScope serves every file from one path, the file named in the query
        segments.append(
            "q-"
            + hashlib.sha256(parts.query.encode()).hexdigest()[:16]
            + "-"
            + release_file.path.replace("/", "_")
        )
    return cache_root().joinpath("downloads", *segments)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(digest: str, release_file: ReleaseFile, expected: str | None) -> bool:
    if expected is not None:
        return digest == expected
    return release_file.sha256_prefix is not None and digest.startswith(release_file.sha256_prefix)


def _describe_expected(release_file: ReleaseFile, expected: str | None) -> str:
    return expected if expected is not None else f"{release_file.sha256_prefix}... (published prefix)"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def _progress(total: int | None, initial: int, name: str, quiet: bool) -> Any:
    from huggingface_hub.utils import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=quiet or not sys.stderr.isatty(),
        leave=False,
    )


def _open(url: str, start: int) -> Any:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)


def _stream(response: Any, output: IO[bytes], bar: Any) -> int:
    written = 0
    while True:
        block = response.read(CHUNK_SIZE)
        if not block:
            return written
        output.write(block)
        written += len(block)
        bar.update(len(block))


def _fetch_to_partial(alias: str, url: str, partial: Path, quiet: bool) -> None:
    """Download ``url`` into ``partial``, resuming what is there; retries a dropped connection."""
    import http.client

    last_error: BaseException | None = None
    for attempt in range(MAX_ATTEMPTS):
        start = partial.stat().st_size if partial.exists() else 0
        try:
            response = _open(url, start)
        except urllib.error.HTTPError as error:
            if error.code == 416 and start:  # the partial file is complete (or longer than the file)
                return
            raise OSError(f"{alias}: downloading {url} failed: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            last_error = error
            time.sleep(min(0.2 * 2**attempt, 2.0))
            continue
        with response:
            status = getattr(response, "status", 200)
            resumed = status == 206
            length = response.headers.get("Content-Length")
            total = (int(length) + (start if resumed else 0)) if length and length.isdigit() else None
            mode = "ab" if resumed else "wb"  # a server ignoring Range sends everything again
            try:
                with (
                    open(partial, mode) as output,
                    _progress(total, start if resumed else 0, partial.name[:-5], quiet) as bar,
                ):
                    _stream(response, output, bar)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
                last_error = error  # the bytes received so far stay in `partial`: resume them
                continue
        if total is not None and partial.stat().st_size < total:
            last_error = ConnectionError(f"connection closed after {partial.stat().st_size} of {total} bytes")
            continue
        return
    raise OSError(f"{alias}: downloading {url} failed after {MAX_ATTEMPTS} attempts: {last_error}")


def _modelscope_sha256(alias: str, release_file: ReleaseFile, listings: dict[str, Any] | None) -> str:
    """The SHA-256 ModelScope's file listing publishes for this file (``listings`` caches the
    listings read during one release's download: one request for all its files)."""
    parts = urlsplit(str(release_file.url))
    query = parse_qs(parts.query)
    revision = (query.get("Revision") or ["master"])[0]
    file_path = (query.get("FilePath") or [release_file.path])[0]
    listing_path = parts.path.rsplit("/repo", 1)[0] + "/repo/files"
    listing_url = urlunsplit(
        (parts.scheme, parts.netloc, listing_path, f"Revision={quote(revision)}&Recursive=true", "")
    )
    url = effective_url(listing_url)
    listing = None if listings is None else listings.get(url)
    if listing is None:
        try:
            with _open(url, 0) as response:
                listing = json.loads(response.read(16 << 20))
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise OSError(f"{alias}: reading ModelScope's file listing {url} failed: {error}") from None
        if listings is not None:
            listings[url] = listing
    files = ((listing if isinstance(listing, dict) else {}).get("Data") or {}).get("Files") or []
    for item in files:
        if isinstance(item, dict) and item.get("Path") == file_path:
            digest = str(item.get("Sha256") or "").lower()
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
    raise ValueError(f"{alias}: ModelScope's file listing {url} gives no sha256 for {file_path!r}")


GITHUB_API_ROOT = "https://api.github.com"
_GITHUB_ASSET_PAGES = 20  # 100 assets a page: a release holds at most 1000 assets


def _read_json(alias: str, url: str, what: str) -> Any:
    try:
        with _open(url, 0) as response:
            return json.loads(response.read(16 << 20))
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise OSError(f"{alias}: reading {what} {url} failed: {error}") from None


def _github_release_sha256(alias: str, release_file: ReleaseFile, listings: dict[str, Any] | None) -> str:
    """The SHA-256 GitHub publishes for a release asset (its ``digest``, ``sha256:<hex>``)."""
    owner, repo, _, _, tag, name = PurePosixPath(urlsplit(str(release_file.url)).path).parts[1:]
    release_url = effective_url(f"{GITHUB_API_ROOT}/repos/{owner}/{repo}/releases/tags/{quote(tag)}")
    cache = listings if listings is not None else {}
    release = cache.get(release_url)
    if release is None:
        release = cache[release_url] = _read_json(alias, release_url, "GitHub's release listing")
    pages = [release.get("assets") or []] if isinstance(release, dict) else []
    release_id = release.get("id") if isinstance(release, dict) else None
    for page in range(1, _GITHUB_ASSET_PAGES + 1):
        for asset in pages[-1]:
            if isinstance(asset, dict) and asset.get("name") == name:
                digest = str(asset.get("digest") or "")
                hex_digest = digest.removeprefix("sha256:").lower()
                if not digest.startswith("sha256:") or not SHA256_HEX.match(hex_digest):
                    raise ChecksumError(
                        f"{alias}: GitHub publishes no sha256 digest for {release_file.url} "
                        f"(got {digest!r}); refusing to use it unverified"
                    )
                return hex_digest
        if release_id is None:  # a release always has an id: a listing without one is not GitHub's
            break
        assets_url = effective_url(
            f"{GITHUB_API_ROOT}/repos/{owner}/{repo}/releases/{release_id}/assets?per_page=100&page={page}"
        )
        listed = cache.get(assets_url)
        if listed is None:
            listed = cache[assets_url] = _read_json(alias, assets_url, "GitHub's release assets")
        if not isinstance(listed, list) or not listed:
            break
        pages.append(listed)
    raise ValueError(f"{alias}: GitHub's release {owner}/{repo}@{tag} lists no asset {name!r}")


def _expected_sha256(alias: str, release_file: ReleaseFile, listings: dict[str, Any] | None) -> str | None:
    """The full digest to check, or None when only the published prefix is known."""
    if release_file.sha256:
        return release_file.sha256
    if release_file.checksum_from == "modelscope":
        return _modelscope_sha256(alias, release_file, listings)
    if release_file.checksum_from == "github-release":
        return _github_release_sha256(alias, release_file, listings)
    return None


def fetch_url_file(
    alias: str, release_file: ReleaseFile, *, quiet: bool = False, listings: dict[str, Any] | None = None
) -> Path:
    """The verified local copy of a non-Hub file (downloaded, resumed and verified when needed)."""
    final = download_path(release_file)
    with file_lock(final):
        if final.is_file():
            return final  # verified before it was moved into place
        if is_offline():
            raise OfflineError(
                f"{alias}: {release_file.path} is not in the cache and HF_HUB_OFFLINE is set "
                f"(run `demixers download {alias}` online first)"
            )
        expected = _expected_sha256(alias, release_file, listings)
        partial = final.with_name(final.name + ".part")
        url = effective_url(str(release_file.url))
        _fetch_to_partial(alias, url, partial, quiet)
        digest = sha256_of(partial)
        if not _matches(digest, release_file, expected):
            partial.unlink(missing_ok=True)
            raise ChecksumError(
                f"{alias}: checksum mismatch for {url}: expected sha256 "
                f"{_describe_expected(release_file, expected)}, got {digest}; the download was deleted"
            )
        os.replace(partial, final)
        return final


def fetch_hub_file(alias: str, release_file: ReleaseFile, *, quiet: bool = False) -> Path:
    """The verified local copy of a Hub file (``hf_hub_download``, then the checksum)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            hf_hub_download(
                str(release_file.hub_repo_id),
                str(release_file.hub_filename),
                revision=release_file.hub_revision,
                local_files_only=is_offline(),
            )
        )
    except LocalEntryNotFoundError:
        if is_offline():
            raise OfflineError(
                f"{alias}: {release_file.source} is not in the cache and HF_HUB_OFFLINE is set "
                f"(run `demixers download {alias}` online first)"
            ) from None
        raise
    blob = path.resolve()
    expected = release_file.sha256
    if expected is None and release_file.checksum_from == "hub-lfs":
        expected = blob.name  # the cache names an LFS blob by its sha256, as the Hub announced it
        if len(expected) != 64:
            raise ChecksumError(
                f"{alias}: {release_file.source} is not an LFS file on the Hub, which then publishes no "
                "sha256 for it"
            )
    digest = sha256_of(blob)
    if not _matches(digest, release_file, expected):
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{alias}: checksum mismatch for {release_file.source}: expected sha256 "
            f"{_describe_expected(release_file, expected)}, got {digest}; the download was deleted"
        )
    return path


def fetch_release(entry: CatalogueEntry, folder: Path, *, quiet: bool = False) -> dict[str, str]:
    """Download and verify every file of ``entry``, linking them into ``folder`` under their names
    (the layout the converter reads), with the inline files; returns ``{name: sha256}``."""
    if entry.refused:
        raise ValueError(f"{entry.alias} cannot be loaded: {entry.refused}")
    folder.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    listings: dict[str, Any] = {}
    for release_file in entry.files:
        local = (
            fetch_hub_file(entry.alias, release_file, quiet=quiet)
            if release_file.on_hub
            else fetch_url_file(entry.alias, release_file, quiet=quiet, listings=listings)
        )
        target = folder / release_file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(local.resolve(), target)
        digests[release_file.path] = sha256_of(target)
    for name, text in entry.inline_files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digests


def _link_or_copy(source: Path, target: Path) -> None:
    import shutil

    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        os.link(source, target)  # no copy of a large checkpoint when the file system allows it
    except OSError:
        shutil.copyfile(source, target)


def cached_file(release_file: ReleaseFile) -> Path | None:
    """The cached copy of a file, or None (no request is made)."""
    if release_file.on_hub:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            str(release_file.hub_repo_id),
            str(release_file.hub_filename),
            revision=release_file.hub_revision,
        )
        return Path(found) if isinstance(found, str) else None
    path = download_path(release_file)
    return path if path.is_file() else None


def is_downloaded(entry: CatalogueEntry) -> bool:
    """Whether every file of ``entry`` is in the cache (no request is made)."""
    if entry.refused or not entry.files:
        return False
    return all(cached_file(release_file) is not None for release_file in entry.files)


__all__ = [
    "MIRROR_ENVIRONMENT_VARIABLE",
    "ChecksumError",
    "OfflineError",
    "cache_root",
    "cached_file",
    "effective_url",
    "fetch_release",
    "is_downloaded",
    "is_offline",
]
