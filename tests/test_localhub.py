"""The local Hub server against the real huggingface_hub client: routes, auth, LFS checks, faults."""

from __future__ import annotations

import hashlib
import os

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub import errors as hf
from support.hub import OTHER_TOKEN, READ_TOKEN, USER, WRITE_TOKEN

from hubbot.errors import HubError
from hubbot.hub.client import download_file, hub_errors, make_api


def _api(hub, token=WRITE_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token)


def _publish_one(hub, repo=f"{USER}/m", data: bytes | None = None, name="a.gguf"):
    api = _api(hub)
    api.create_repo(repo, exist_ok=True)
    data = data if data is not None else os.urandom(300_000)
    info = api.create_commit(repo, operations=[CommitOperationAdd(name, data)], commit_message=f"add {name}")
    return api, data, info


def test_upload_list_and_download_round_trip(local_hub, tmp_path):
    api, data, info = _publish_one(local_hub)
    tree = {f.path: f for f in api.list_repo_tree(f"{USER}/m", recursive=True)}
    assert tree["a.gguf"].lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert tree["a.gguf"].size == len(data)
    paths = api.get_paths_info(f"{USER}/m", ["a.gguf", "missing.gguf"])
    assert [p.path for p in paths] == ["a.gguf"]
    path, sha = download_file(f"{USER}/m", "a.gguf", endpoint=local_hub.endpoint, cache_dir=tmp_path / "cache")
    assert path.read_bytes() == data and sha == info.oid
    # The storage is on disk: a new server over the same folder serves the same repo.
    from hubbot.testing.localhub import LocalHub

    with LocalHub(local_hub.storage) as again:
        assert again.read_file(f"{USER}/m", "a.gguf") == data


def test_unchanged_commit_is_dropped_by_the_client(local_hub):
    api, data, info = _publish_one(local_hub)
    again = api.create_commit(f"{USER}/m", operations=[CommitOperationAdd("a.gguf", data)], commit_message="same")
    assert again.oid == info.oid
    assert len(local_hub.commits(f"{USER}/m")) == 2  # the initial commit and ours


def test_lfs_upload_with_wrong_sha256_is_refused(local_hub, monkeypatch):
    api = _api(local_hub)
    api.create_repo(f"{USER}/m")
    op = CommitOperationAdd("bad.gguf", os.urandom(1000))
    op.upload_info.sha256 = hashlib.sha256(b"something else").digest()
    with pytest.raises(Exception):
        api.create_commit(f"{USER}/m", operations=[op], commit_message="bad")
    assert "bad.gguf" not in local_hub.files(f"{USER}/m")
    assert not list((local_hub.storage / "lfs").rglob(hashlib.sha256(b"something else").hexdigest()))


def test_commit_naming_an_object_never_uploaded_is_refused(local_hub):
    api = _api(local_hub)
    api.create_repo(f"{USER}/m")
    op = CommitOperationAdd("x.gguf", os.urandom(1000))
    op._upload_mode, op._is_uploaded = "lfs", True  # pretend the upload happened
    with pytest.raises(hf.HfHubHTTPError) as exc:
        api.create_commit(f"{USER}/m", operations=[op], commit_message="x")
    assert exc.value.response.status_code == 422


def test_auth_errors(local_hub, tmp_path):
    _publish_one(local_hub)
    with pytest.raises(hf.HfHubHTTPError) as bad:
        _api(local_hub, "hf_not_a_token").create_repo(f"{USER}/n")
    assert bad.value.response.status_code == 401
    with pytest.raises(hf.HfHubHTTPError) as ro:
        _api(local_hub, READ_TOKEN).create_commit(f"{USER}/m", operations=[CommitOperationAdd("b", b"b")],
                                                  commit_message="b")
    assert ro.value.response.status_code == 403
    with pytest.raises(hf.HfHubHTTPError) as foreign:
        _api(local_hub, OTHER_TOKEN).create_repo(f"{USER}/n")
    assert foreign.value.response.status_code == 403


def test_private_and_gated_repos(local_hub, tmp_path):
    api = _api(local_hub)
    api.create_repo(f"{USER}/p", private=True)
    with pytest.raises(hf.RepositoryNotFoundError):
        _api(local_hub, OTHER_TOKEN).model_info(f"{USER}/p")
    _publish_one(local_hub, f"{USER}/g")
    api.update_repo_settings(f"{USER}/g", gated="manual")
    assert api.model_info(f"{USER}/g").gated == "manual"
    with pytest.raises(hf.GatedRepoError):
        hf_hub_download(f"{USER}/g", "a.gguf", endpoint=local_hub.endpoint, token=OTHER_TOKEN,
                        cache_dir=tmp_path / "c1")
    local_hub.grant(f"{USER}/g", "someone-else")
    assert hf_hub_download(f"{USER}/g", "a.gguf", endpoint=local_hub.endpoint, token=OTHER_TOKEN,
                           cache_dir=tmp_path / "c2")


def test_hub_errors_are_one_line_and_say_what_to_do(local_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_TESTSECRET_invalid_token")
    with pytest.raises(HubError) as e401, hub_errors(f"{USER}/m", "reading the repo", local_hub.endpoint):
        make_api(endpoint=local_hub.endpoint).model_info(f"{USER}/m")
    assert "401" in str(e401.value) and "HF_TOKEN" in str(e401.value) and "\n" not in str(e401.value)
    assert "TESTSECRET" not in str(e401.value)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    with pytest.raises(HubError) as missing:
        download_file(f"{USER}/nothing-here", "a.gguf", endpoint=local_hub.endpoint, cache_dir=tmp_path)
    assert "not found" in str(missing.value) and "target.repo" in str(missing.value)
    _publish_one(local_hub, f"{USER}/g")
    _api(local_hub).update_repo_settings(f"{USER}/g", gated="auto")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    with pytest.raises(HubError) as gated:
        download_file(f"{USER}/g", "a.gguf", endpoint=local_hub.endpoint, cache_dir=tmp_path / "g")
    assert "gated" in str(gated.value) and "request access" in str(gated.value)


def test_faults_are_injected_and_spent(local_hub):
    api = _api(local_hub)
    api.create_repo(f"{USER}/m")
    local_hub.inject("commit", status=500)
    with pytest.raises(hf.HfHubHTTPError):
        api.create_commit(f"{USER}/m", operations=[CommitOperationAdd("r.txt", b"1")], commit_message="one")
    api.create_commit(f"{USER}/m", operations=[CommitOperationAdd("r.txt", b"1")], commit_message="one")
    # The client retries LFS uploads itself, including a connection dropped part-way through.
    local_hub.inject("lfs-upload", drop_after=50_000)
    data = os.urandom(200_000)
    api.create_commit(f"{USER}/m", operations=[CommitOperationAdd("big.gguf", data)], commit_message="big")
    assert local_hub.read_file(f"{USER}/m", "big.gguf") == data
    assert local_hub.requests["lfs-upload"] == 2
    assert local_hub.bytes_received == 50_000 + len(data)


def test_a_server_never_started_closes_at_once(tmp_path):
    from hubbot.testing.localhub import LocalHub

    hub = LocalHub(tmp_path / "store")
    hub.create_repo("someone/r", private=True)
    again = LocalHub(tmp_path / "store")
    assert again.load_repo("someone/r")["private"] is True
    again.close()
    hub.close()  # would block forever if it waited for a serve loop that never ran
