"""End-to-end tests of the loopback Hub server through huggingface_hub, datasets and transformers.

The session server is started by ``tests/conftest.py`` (``start_session_hub_server()``) before
anything imports huggingface_hub, and exposed as the session fixture ``hub_server``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    HfFileSystem,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import LoopbackHubServer


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def hub(hub_server: LoopbackHubServer) -> LoopbackHubServer:
    assert hub_server.url == constants.ENDPOINT, (
        "huggingface_hub was imported before the loopback Hub server configured HF_ENDPOINT: "
        "tests/conftest.py must call start_session_hub_server() at import time"
    )
    assert constants.HF_HUB_DISABLE_XET
    return hub_server


@pytest.fixture(scope="module")
def api(hub: LoopbackHubServer) -> HfApi:
    return HfApi()


@pytest.fixture(scope="module")
def namespace(hub: LoopbackHubServer) -> str:
    return hub.username


# --------------------------------------------------------------------------------------------- basics
def test_whoami_and_repo_lifecycle(api: HfApi, hub: LoopbackHubServer, namespace: str) -> None:
    assert api.whoami()["name"] == hub.username

    repo_id = f"{namespace}/{_unique('lifecycle')}"
    url = api.create_repo(repo_id)
    assert url.repo_id == repo_id and url.endpoint == hub.url
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409

    info = api.model_info(repo_id)
    assert info.id == repo_id and len(info.sha) == 40
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # the Hub's initial commit
    # A repo without namespace goes to the token's user
    short = _unique("short")
    assert api.create_repo(short, repo_type="dataset").repo_id == f"{hub.username}/{short}"

    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_upload_regular_and_lfs_files_list_and_download(
    api: HfApi, hub: LoopbackHubServer, namespace: str
) -> None:
    repo_id = f"{namespace}/{_unique('files')}"
    api.create_repo(repo_id)
    small = "héllo wörld\n".encode()
    big = os.urandom(11 * 1024 * 1024)  # > 10 MB => the Hub asks for LFS
    api.upload_file(path_or_fileobj=small, path_in_repo="notes/hello world.txt", repo_id=repo_id)
    commit = api.upload_file(path_or_fileobj=big, path_in_repo="weights/big.bin", repo_id=repo_id)
    assert len(commit.oid) == 40

    assert sorted(api.list_repo_files(repo_id)) == [
        ".gitattributes",
        "notes/hello world.txt",
        "weights/big.bin",
    ]
    tree = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True)}
    assert {"notes", "weights"} <= set(tree)
    assert tree["notes/hello world.txt"].lfs is None
    big_info = tree["weights/big.bin"]
    assert big_info.size == len(big)
    assert big_info.lfs is not None and big_info.lfs.sha256 == hashlib.sha256(big).hexdigest()

    paths = api.get_paths_info(repo_id, ["weights/big.bin", "notes", "missing.txt"])
    assert {p.path for p in paths} == {"weights/big.bin", "notes"}

    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["weights/big.bin"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    assert siblings["notes/hello world.txt"].size == len(small)
    # The LFS batch endpoint handed out an upload URL which was PUT to, then verified.
    assert hub.requests_matching("POST", ".git/info/lfs/objects/batch")
    assert any(e[2] == 200 for e in hub.requests_matching("PUT", "/lfs-upload/"))
    assert hub.requests_matching("POST", "/info/lfs/objects/verify")

    small_path = hf_hub_download(repo_id, "notes/hello world.txt")
    big_path = hf_hub_download(repo_id, "weights/big.bin")
    assert Path(small_path).read_bytes() == small
    assert Path(big_path).read_bytes() == big
    # The cache is keyed by ETag: git blob sha1 for regular files, sha256 for LFS files.
    git_sha1 = hashlib.sha1(b"blob %d\x00" % len(small) + small).hexdigest()
    assert Path(small_path).resolve().name == git_sha1
    assert Path(big_path).resolve().name == hashlib.sha256(big).hexdigest()
    assert Path(small_path).parent.parent.name == commit.oid

    snapshot = Path(snapshot_download(repo_id))
    assert (snapshot / "weights" / "big.bin").stat().st_size == len(big)

    # Re-uploading identical content is skipped client-side thanks to the preupload `oid`.
    again = api.upload_file(path_or_fileobj=small, path_in_repo="notes/hello world.txt", repo_id=repo_id)
    assert again.oid == commit.oid


def test_range_requests_and_hf_filesystem(api: HfApi, hub: LoopbackHubServer, namespace: str) -> None:
    repo_id = f"{namespace}/{_unique('ranges')}"
    api.create_repo(repo_id, repo_type="dataset")
    data = bytes(range(256)) * 4096  # 1 MiB, binary => LFS
    api.upload_file(path_or_fileobj=data, path_in_repo="blob.dat", repo_id=repo_id, repo_type="dataset")

    fs = HfFileSystem()
    path = f"datasets/{repo_id}/blob.dat"
    assert fs.size(path) == len(data)
    assert fs.ls(f"datasets/{repo_id}", detail=False) == [
        f"datasets/{repo_id}/.gitattributes",
        f"datasets/{repo_id}/blob.dat",
    ]
    with fs.open(path, "rb", block_size=4096) as f:
        f.seek(300_000)
        assert f.read(1000) == data[300_000:301_000]
    ranged = [e for e in hub.requests_matching("GET", f"/datasets/{repo_id}/resolve/") if e[3]]
    assert ranged and all(e[2] == 206 for e in ranged)
    assert fs.cat_file(path, start=10, end=20) == data[10:20]

    url = f"{hub.url}/datasets/{repo_id}/resolve/main/blob.dat"
    auth = {"authorization": f"Bearer {hub.token}"}
    with httpx2.Client() as client:
        head = client.head(url, headers=auth)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert len(head.headers["x-repo-commit"]) == 40
        suffix = client.get(url, headers={**auth, "Range": "bytes=-5"})
        assert suffix.status_code == 206 and suffix.content == data[-5:]
        assert suffix.headers["content-range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
        beyond = client.get(url, headers={**auth, "Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416


def test_branches_tags_and_revisions(api: HfApi, namespace: str) -> None:
    repo_id = f"{namespace}/{_unique('revs')}"
    api.create_repo(repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="file.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="dev")
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    on_dev = api.upload_file(path_or_fileobj=b"v2", path_in_repo="file.txt", repo_id=repo_id, revision="dev")
    api.create_tag(repo_id, tag="v1.0", revision=first.oid)

    assert Path(hf_hub_download(repo_id, "file.txt")).read_bytes() == b"v1"
    assert Path(hf_hub_download(repo_id, "file.txt", revision="dev")).read_bytes() == b"v2"
    assert Path(hf_hub_download(repo_id, "file.txt", revision="v1.0")).read_bytes() == b"v1"
    assert Path(hf_hub_download(repo_id, "file.txt", revision=on_dev.oid)).read_bytes() == b"v2"
    assert api.model_info(repo_id, revision="dev").sha == on_dev.oid
    assert api.model_info(repo_id, revision=on_dev.oid[:10]).sha == on_dev.oid

    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first.oid, "dev": on_dev.oid}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first.oid)]
    commits = api.list_repo_commits(repo_id, revision="dev")
    assert [c.commit_id for c in commits][:2] == [on_dev.oid, first.oid]
    assert commits[-1].title == "initial commit"

    pr = api.upload_file(path_or_fileobj=b"v3", path_in_repo="file.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    assert Path(hf_hub_download(repo_id, "file.txt", revision="refs/pr/1")).read_bytes() == b"v3"

    # `parentCommit` must be the current head of the branch
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(
            repo_id,
            operations=[CommitOperationAdd("other.txt", b"x")],
            commit_message="stale",
            parent_commit=api.list_repo_commits(repo_id)[-1].commit_id,
        )
    assert stale.value.response.status_code == 412

    api.delete_branch(repo_id, branch="dev")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="dev")


def test_tree_pagination_and_expand(api: HfApi, hub: LoopbackHubServer, namespace: str) -> None:
    repo_id = f"{namespace}/{_unique('many')}"
    api.create_repo(repo_id)
    ops = [CommitOperationAdd(f"shards/{i:03d}.txt", f"{i}".encode()) for i in range(120)]
    commit = api.create_commit(repo_id, operations=ops, commit_message="many files")
    entries = list(api.list_repo_tree(repo_id, "shards", expand=True))  # 50 per page with expand
    assert [e.path for e in entries] == [f"shards/{i:03d}.txt" for i in range(120)]
    assert all(e.last_commit is not None and e.last_commit.oid == commit.oid for e in entries)
    assert (
        len([e for e in hub.requests_matching("GET", f"/api/models/{repo_id}/tree/") if "cursor=" in e[1]])
        == 2
    )


def test_missing_repo_revision_and_file_raise_hub_errors(api: HfApi, namespace: str, tmp_path: Path) -> None:
    repo_id = f"{namespace}/{_unique('errors')}"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="present.txt", repo_id=repo_id)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{namespace}/does-not-exist", "config.json", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{namespace}/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(repo_id)  # exists as a model, not as a dataset
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "present.txt", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "absent.txt", cache_dir=tmp_path)
    assert not api.file_exists(repo_id, "absent.txt") and api.file_exists(repo_id, "present.txt")
    with pytest.raises(FileNotFoundError):
        HfFileSystem().open(f"{repo_id}/absent.txt").read()


def test_wrong_or_missing_token_is_a_clear_401(api: HfApi, namespace: str, tmp_path: Path) -> None:
    repo_id = f"{namespace}/{_unique('auth')}"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=repo_id)
    wrong = HfApi(token="hf_this_is_not_the_token")

    with pytest.raises(HfHubHTTPError, match="Invalid user token") as whoami:
        wrong.whoami()
    assert whoami.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid credentials in Authorization header") as create:
        wrong.create_repo(f"{namespace}/{_unique('never')}")
    assert create.value.response.status_code == 401
    assert not isinstance(create.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as download:
        hf_hub_download(repo_id, "a.txt", token="hf_this_is_not_the_token", cache_dir=tmp_path)
    assert download.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous_write:
        HfApi(token=False).upload_file(path_or_fileobj=b"y", path_in_repo="b.txt", repo_id=repo_id)
    assert anonymous_write.value.response.status_code == 401
    # Anonymous reads of public repos are fine
    assert HfApi(token=False).model_info(repo_id).id == repo_id


def test_private_repo_is_hidden_without_token(api: HfApi, namespace: str, tmp_path: Path) -> None:
    repo_id = f"{namespace}/{_unique('private')}"
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "s.txt", token=False, cache_dir=tmp_path)
    api.update_repo_settings(repo_id, private=False)
    assert HfApi(token=False).model_info(repo_id).private is False


def test_standalone_server_persistence_limits_and_chunked_upload(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with LoopbackHubServer(storage_dir=storage, max_json_body=64 * 1024) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        local = HfApi(endpoint=srv.url, token=srv.token)
        local.create_repo("someone/persisted")
        local.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="someone/persisted")
        with pytest.raises(HfHubHTTPError) as too_big:  # > max_json_body of base64 in the commit NDJSON
            local.upload_file(
                path_or_fileobj=b"a" * 4_000_000, path_in_repo="t.txt", repo_id="someone/persisted"
            )
        assert too_big.value.response.status_code == 413

        # LFS upload with a chunked (Transfer-Encoding) body, as git-lfs / streaming clients send it
        payload = b"0123456789" * 1000
        oid = hashlib.sha256(payload).hexdigest()
        auth = {"authorization": f"Bearer {srv.token}"}
        with httpx2.Client() as client:
            batch = client.post(
                f"{srv.url}/someone/persisted.git/info/lfs/objects/batch",
                headers=auth,
                json={"operation": "upload", "objects": [{"oid": oid, "size": len(payload)}]},
            ).json()
            href = batch["objects"][0]["actions"]["upload"]["href"]
            assert client.put(href, content=iter([payload[:3000], payload[3000:]])).status_code == 200
            assert client.put(href.replace("sig=", "sig=0"), content=payload).status_code == 403
            commit = client.post(
                f"{srv.url}/api/models/someone/persisted/commit/main",
                headers={**auth, "content-type": "application/x-ndjson"},
                content=b"\n".join(
                    json.dumps(line).encode()
                    for line in (
                        {"key": "header", "value": {"summary": "lfs", "description": ""}},
                        {
                            "key": "lfsFile",
                            "value": {"path": "l.bin", "algo": "sha256", "oid": oid, "size": 10_000},
                        },
                    )
                ),
            )
            assert commit.status_code == 200, commit.text
    # A new server on the same storage reloads the repositories
    with LoopbackHubServer(storage_dir=storage) as srv:
        local = HfApi(endpoint=srv.url, token=srv.token)
        assert sorted(local.list_repo_files("someone/persisted")) == [".gitattributes", "k.txt", "l.bin"]
        path = hf_hub_download(
            "someone/persisted", "l.bin", endpoint=srv.url, token=srv.token, cache_dir=tmp_path
        )
        assert Path(path).read_bytes() == payload


# ------------------------------------------------------------------------------- datasets & transformers
@pytest.fixture(scope="module")
def pushed_dataset(hub: LoopbackHubServer, namespace: str) -> tuple[str, dict[str, list[dict]]]:
    from datasets import Dataset, DatasetDict

    rows = {
        "train": [{"id": f"tr{i}", "value": i, "text": f"train {i}"} for i in range(5)],
        "test": [{"id": f"te{i}", "value": 100 + i, "text": f"test {i}"} for i in range(3)],
    }
    dd = DatasetDict({split: Dataset.from_list(items) for split, items in rows.items()})
    repo_id = f"{namespace}/{_unique('dataset')}"
    dd.push_to_hub(repo_id)
    return repo_id, rows


@pytest.fixture(scope="module")
def pushed_model(hub: LoopbackHubServer, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import BertConfig, BertModel, BertTokenizer

    repo_id = f"{namespace}/{_unique('tiny-bert')}"
    config = BertConfig(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    BertModel(config).push_to_hub(repo_id)
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "demix"]) + "\n"
    )
    BertTokenizer(str(vocab)).push_to_hub(repo_id)
    return repo_id


def test_dataset_dict_push_and_load(pushed_dataset: tuple[str, dict], api: HfApi) -> None:
    from datasets import load_dataset

    repo_id, rows = pushed_dataset
    files = api.list_repo_files(repo_id, repo_type="dataset")
    assert "README.md" in files
    assert any(f.startswith("data/train-") and f.endswith(".parquet") for f in files)
    loaded = load_dataset(repo_id)
    assert set(loaded) == {"train", "test"}
    for split, items in rows.items():
        assert loaded[split].to_list() == items


def test_dataset_streaming(pushed_dataset: tuple[str, dict], hub: LoopbackHubServer) -> None:
    from datasets import load_dataset

    repo_id, rows = pushed_dataset
    streamed = load_dataset(repo_id, streaming=True)
    for split, items in rows.items():
        assert list(streamed[split]) == items
    # Streaming reads parquet through hf:// (HfFileSystem) with Range requests.
    assert any(e[3] for e in hub.requests_matching("GET", f"/datasets/{repo_id}/resolve/"))


def test_transformers_push_from_pretrained_and_pipeline(pushed_model: str, api: HfApi) -> None:
    import torch
    from transformers import AutoModel, pipeline

    files = set(api.list_repo_files(pushed_model))
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= files
    model = AutoModel.from_pretrained(pushed_model)
    assert model.config.hidden_size == 8
    extractor = pipeline("feature-extraction", model=pushed_model)
    features = extractor("hello world")
    assert torch.tensor(features).shape[-1] == 8


def test_offline_mode_loads_model_and_dataset_from_cache(
    pushed_model: str, pushed_dataset: tuple[str, dict], hub: LoopbackHubServer
) -> None:
    from datasets import load_dataset
    from transformers import AutoModel

    dataset_id, rows = pushed_dataset
    AutoModel.from_pretrained(pushed_model)  # make sure both are in the caches
    load_dataset(dataset_id)
    before = hub.request_count
    script = textwrap.dedent(
        f"""
        from huggingface_hub import constants
        assert constants.HF_HUB_OFFLINE
        from datasets import load_dataset
        from transformers import AutoModel
        model = AutoModel.from_pretrained({pushed_model!r})
        assert model.config.hidden_size == 8
        ds = load_dataset({dataset_id!r})
        assert ds["train"].to_list() == {rows["train"]!r}
        assert ds["test"].to_list() == {rows["test"]!r}
        print("OFFLINE-OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and "OFFLINE-OK" in result.stdout, result.stderr[-4000:]
    assert hub.request_count == before, "offline mode must not reach the Hub server"
