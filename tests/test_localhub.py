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


# --- repos seeded without HTTP (the source tests' Hub), read back through the real client ------------

def test_seeded_commits_branches_and_tags_read_back_through_the_client(local_hub, tmp_path):
    repo = "org/seeded"
    first = local_hub.add_commit(repo, {"m.gguf": b"\0old", "README.md": b"# one"})
    second = local_hub.add_commit(repo, {"m.gguf": b"\0new", "README.md": b"# two"})
    dev = local_hub.add_commit(repo, {"m.gguf": b"\0dev"}, branch="dev")
    assert local_hub.create_tag(repo, "v1", first) == first
    with pytest.raises(ValueError, match="already exists"):
        local_hub.create_tag(repo, "v1")
    with pytest.raises(KeyError):
        local_hub.create_tag(repo, "v2", "no-such-branch")

    api = _api(local_hub)
    refs = api.list_repo_refs(repo)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second, "dev": dev}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first}
    assert local_hub.sha(repo, "v1") == first and local_hub.sha(repo) == second
    # A new branch starts from main: its commit's parent is main's head; "whole tree" means old files go.
    assert [c["id"] for c in local_hub.commits(repo, "dev")][:2] == [dev, second]
    assert set(local_hub.files(repo, "dev")) == {"m.gguf"}

    for rev, want in (("v1", b"\0old"), ("main", b"\0new"), ("dev", b"\0dev"), (first, b"\0old")):
        path = hf_hub_download(repo, "m.gguf", revision=rev, endpoint=local_hub.endpoint, cache_dir=tmp_path / rev)
        assert open(path, "rb").read() == want
    # Stored as the Hub would: binary files in LFS (sha256), text as git blobs (git's blob id).
    tree = {f.path: f for f in api.list_repo_tree(repo)}
    assert tree["m.gguf"].lfs.sha256 == hashlib.sha256(b"\0new").hexdigest()
    assert tree["README.md"].lfs is None and tree["README.md"].blob_id == hashlib.sha1(b"blob 5\0# two").hexdigest()


def test_downloads_count_bodies_once_and_ranges_are_served(local_hub, tmp_path):
    import urllib.error
    import urllib.request

    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    data = bytes(range(256)) * 40
    local_hub.add_commit("org/r", {"w.gguf": data})
    url = hf_hub_url("org/r", "w.gguf", endpoint=local_hub.endpoint)
    meta = get_hf_file_metadata(url, token=WRITE_TOKEN)  # HEAD: headers only
    assert meta.size == len(data) and meta.etag == hashlib.sha256(data).hexdigest()
    assert meta.commit_hash == local_hub.sha("org/r") and not local_hub.downloads
    for _ in range(2):  # the second call is served from the cache: no second body
        hf_hub_download("org/r", "w.gguf", endpoint=local_hub.endpoint, cache_dir=tmp_path)
    assert dict(local_hub.downloads) == {("org/r", "w.gguf"): 1}

    def get(range_header: str):
        req = urllib.request.Request(url, headers={"Range": range_header, "Authorization": f"Bearer {WRITE_TOKEN}"})
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers["Content-Range"], resp.read()

    assert get("bytes=10-19") == (206, f"bytes 10-19/{len(data)}", data[10:20])
    assert get("bytes=10000-") == (206, f"bytes 10000-{len(data) - 1}/{len(data)}", data[10000:])
    assert get("bytes=-5") == (206, f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}", data[-5:])
    with pytest.raises(urllib.error.HTTPError) as past_the_end:
        get(f"bytes={len(data)}-")
    assert past_the_end.value.code == 416
    assert local_hub.downloads[("org/r", "w.gguf")] == 4


def test_seeded_gated_and_private_repos_answer_with_the_hubs_error_codes(local_hub, tmp_path):
    local_hub.create_repo("org/g", gated="manual")
    local_hub.create_repo("org/p", private=True)
    for repo in ("org/g", "org/p"):
        local_hub.add_commit(repo, {"a.gguf": b"\0a"})
    # Like the Hub, a gated repo is listed to anyone; its files are not.
    assert _api(local_hub, None).model_info("org/g").gated == "manual"
    with pytest.raises(hf.GatedRepoError):
        hf_hub_download("org/g", "a.gguf", endpoint=local_hub.endpoint, token=False, cache_dir=tmp_path / "a")
    with pytest.raises(hf.GatedRepoError):
        hf_hub_download("org/g", "a.gguf", endpoint=local_hub.endpoint, token=OTHER_TOKEN, cache_dir=tmp_path / "b")
    with pytest.raises(hf.RepositoryNotFoundError):
        _api(local_hub, OTHER_TOKEN).model_info("org/p")
    local_hub.grant("org/g", "someone-else")
    local_hub.grant("org/p", "someone-else")
    for repo in ("org/g", "org/p"):
        assert hf_hub_download(repo, "a.gguf", endpoint=local_hub.endpoint, token=OTHER_TOKEN, cache_dir=tmp_path / "c")
    assert not local_hub.write_requests()


# --- serve-hub: its tokens file and its port (issue 14) -----------------------------------------------

def _serve_hub(*args: str):
    from click.testing import CliRunner

    from hubbot.cli import main

    return CliRunner().invoke(main, ["serve-hub", *args])


@pytest.mark.parametrize("text, problem", [
    ('{"hf_TESTSECRET_a": {"user": "alice",}}', "not valid JSON (Expecting property name enclosed in double quotes "
                                                "at line 1, column 38)"),
    ('["hf_TESTSECRET_a"]', "the top level is a list, not an object"),
    ("{}", "it holds no tokens (leave out --tokens to let every request in)"),
    ('{"hf_TESTSECRET_a": "alice"}', "entry 1 is a string, not an object"),
    ('{"hf_TESTSECRET_a": {"user": "alice"}, "hf_TESTSECRET_b": {"write": true}}', 'entry 2 needs "user"'),
    ('{"hf_TESTSECRET_a": {"user": "alice", "write": "yes"}}', '"write" of entry 1 (user \'alice\') is a string'),
    ('{"hf_TESTSECRET_a": {"user": "alice", "orgs": "acme"}}', '"orgs" of entry 1 (user \'alice\') is not a list'),
    ('{"hf_TESTSECRET_a": {"user": "alice", "admin": true}}', "entry 1 has the unknown key 'admin'"),
    ('{"hf_TESTSECRET_a\\n": {"user": "alice"}}', "the token of entry 1 is empty or holds spaces, control"),
    ('{"hf_TESTSECRET_a": {"user": "alice"}}\xff', "not UTF-8 text"),
])
def test_serve_hub_refuses_a_malformed_tokens_file_in_one_line(tmp_path, text, problem):
    tokens = tmp_path / "tokens.json"
    tokens.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    result = _serve_hub("--tokens", str(tokens), "--storage", str(tmp_path / "store"), "--port", "0")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: tokens file {tokens}: {problem}")
    assert 'expected {"<token>": {"user": "<name>", "write": true, "orgs": ["<org>"]}}' in result.output
    assert result.output.count("\n") == 1 and "TESTSECRET" not in result.output
    assert not (tmp_path / "store").exists()  # refused before the server made anything


def test_serve_hub_on_a_port_in_use_says_so_and_how_to_pick_another(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve_hub("--port", str(port), "--storage", str(tmp_path / "store"))
    assert result.exit_code == 1
    assert result.output == (f"error: port {port} on 127.0.0.1 is already in use: pick another with --port "
                             "(--port 0 takes any free port)\n")
    assert not (tmp_path / "store").exists()


def test_serve_hub_serves_the_accounts_of_its_tokens_file(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({WRITE_TOKEN: {"user": "alice", "orgs": ["acme"]},
                                  READ_TOKEN: {"user": "bob", "write": False}}))
    proc = subprocess.Popen([sys.executable, "-m", "hubbot", "serve-hub", "--port", "0", "--storage",
                             str(tmp_path / "store"), "--tokens", str(tokens)], stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        endpoint = first.split("local hub at ")[1].split()[0]
        alice = HfApi(endpoint=endpoint, token=WRITE_TOKEN).whoami()
        assert alice["name"] == "alice" and [o["name"] for o in alice["orgs"]] == ["acme"]
        assert HfApi(endpoint=endpoint, token=READ_TOKEN).whoami()["auth"]["accessToken"]["role"] == "read"
        HfApi(endpoint=endpoint, token=WRITE_TOKEN).create_repo("acme/m")
        with pytest.raises(hf.HfHubHTTPError) as ro:
            HfApi(endpoint=endpoint, token=READ_TOKEN).create_repo("bob/m")
        assert ro.value.response.status_code == 403
        with pytest.raises(hf.HfHubHTTPError) as unknown:
            HfApi(endpoint=endpoint, token="hf_unknown").whoami()
        assert unknown.value.response.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0 and WRITE_TOKEN not in first + out
    assert (tmp_path / "store" / "repos" / "acme" / "m" / "repo.json").is_file()
