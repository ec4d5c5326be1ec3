"""Bad input on the Hub paths: malformed tokens, unreachable or malformed endpoints, dropped
connections, flag combinations and ref names the Hub would refuse, a card job with nothing to name.

Each case runs the real command line and checks the one line it prints, the exit code, that no
work was done (nothing built, no request sent, nothing written) where the input was known bad
from the start, and that the token shows up nowhere, with and without ``-v``.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi
from support.configs import write_config
from support.hub import USER, WRITE_TOKEN, tiny_ladder_yaml

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.hub.client import hub_endpoint, make_api
from hubbot.hub.push import PushTarget
from hubbot.hub.token import hub_token, install_redaction, redact

REPO = f"{USER}/tiny-GGUF"
BAD_TOKENS = {
    "non-ascii": "hf_TESTSECRET_bädtoken_4711",
    "line-break": "hf_TESTSECRET_first\r\nhf_TESTSECRET_second",
}
HUB_SOURCE = """\
source:
  repo: org/tiny
  file: m-f16.gguf
target:
  repo: someone/tiny-GGUF
card:
  model_name: tiny
variants:
  - name: q8_0
    type: Q8_0
"""


def invoke(args: list[str], env: dict[str, str], verbose: bool = False):
    return CliRunner().invoke(main, (["-v"] if verbose else []) + args, env=env)


def error_line(result, code: int = 1) -> str:
    """The one error line of a failed command (after any -v log lines); no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def assert_not_shown(result, secret: str) -> None:
    """Neither the token nor any long piece of it (or its escaped form) is in stdout or stderr."""
    pieces = {secret, secret.encode("unicode_escape").decode(), repr(secret.encode())[2:-1]}
    pieces |= {p for p in secret.split() if len(p) >= 8}
    for text in (result.stdout, result.stderr):
        assert not [p for p in pieces if p in text], text


def requests_made(hub) -> int:
    return sum(hub.requests.values())


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DroppingServer:
    """Accepts each connection, reads the request, and closes it without an answer (a broken network)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dropping_server():
    server = DroppingServer()
    yield server
    server.close()


# --- the token ------------------------------------------------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_malformed_token_is_one_line_before_any_work(local_hub, tmp_path, tiny_gguf, fast_retries, kind, verbose):
    token = BAD_TOKENS[kind]
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    env = {"HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": token}
    result = invoke(["publish", "-c", str(cfg), "--skip-bench", "--dry-run"], env, verbose)
    line = error_line(result)
    problem = "not ASCII" if kind == "non-ascii" else "a line break inside it"
    assert line.startswith("error: HF_TOKEN does not hold a valid Hub token (") and problem in line
    assert "set HF_TOKEN to the token alone" in line
    assert_not_shown(result, token)
    assert requests_made(local_hub) == 0 and fast_retries == []
    assert not (load_config(cfg).workdir / "out").exists()  # nothing built
    # The source side checks the same way before its first request.
    src = write_config(tmp_path / "s", HUB_SOURCE)
    result = invoke(["plan", "-c", str(src)], env, verbose)
    assert error_line(result).startswith("error: HF_TOKEN does not hold a valid Hub token")
    assert_not_shown(result, token)
    assert requests_made(local_hub) == 0


def test_malformed_token_file_is_named_not_shown(local_hub, tmp_path, tiny_gguf, monkeypatch):
    secret = "hf_TESTSECRET_fïle_token_0815"
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text(secret + "\n", encoding="utf-8")
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    for verbose in (False, True):
        result = invoke(["publish", "-c", str(cfg), "--dry-run"], {"HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": "",
                                                                    "HF_HOME": str(home)}, verbose)
        line = error_line(result)
        assert f"the token file {home / 'token'} does not hold a valid Hub token" in line
        assert "hf auth login" in line
        assert_not_shown(result, secret)
    assert requests_made(local_hub) == 0


def test_token_lookup_reads_the_environment_at_call_time(local_hub, tmp_path, monkeypatch):
    """huggingface_hub reads HF_HOME / HF_TOKEN_PATH once at import; hubbot follows later changes."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", constants.HF_TOKEN_PATH)  # restored after the test
    monkeypatch.delenv("HF_TOKEN")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    assert hub_token() is None
    (home / "token").write_text(WRITE_TOKEN + "\n")
    assert hub_token() == WRITE_TOKEN
    # The client made now sends it: the local Hub knows whose token it is.
    assert make_api(endpoint=local_hub.endpoint).whoami()["name"] == USER
    other = tmp_path / "elsewhere"
    other.write_text("hf_from_token_path_file\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(other))
    assert hub_token() == "hf_from_token_path_file"
    monkeypatch.setenv("HF_TOKEN", "  hf_from_the_environment \n")
    assert hub_token() == "hf_from_the_environment"
    monkeypatch.setenv("HF_TOKEN", "")  # blank: the file again
    assert hub_token() == "hf_from_token_path_file"


def test_logs_and_tracebacks_never_show_the_token(monkeypatch, capsys):
    """The filter the CLI installs scrubs the token and any Bearer value from records, arguments and tracebacks."""
    token = "hf_TESTSECRET_logged_31337"
    monkeypatch.setenv("HF_TOKEN", token)
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_redaction()
        assert any(type(f).__name__ == "RedactingFilter" for f in handler.filters)
        log = logging.getLogger("httpx2")
        log.warning("Illegal header value %r", f"Bearer {token}\n".encode())
        log.warning("headers: {'authorization': 'Bearer hf_TESTSECRET_someone_elses_token'}")
        try:
            raise RuntimeError(f"sent {token} to the server")
        except RuntimeError:
            log.exception("request failed")
            import sys

            sys.excepthook(*sys.exc_info())
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Illegal header value" in err and "request failed" in err and "RuntimeError: sent *** to" in err
    assert "TESTSECRET" not in err
    assert redact(f"token={token}") == "token=***"


# --- endpoints and connections --------------------------------------------------------------------

@pytest.mark.parametrize("command", ["plan", "build"])
def test_unreachable_endpoint_for_a_hub_source_is_one_line(tmp_path, fast_retries, command):
    port = closed_port()
    src = write_config(tmp_path / "s", HUB_SOURCE)
    for verbose in (False, True):
        result = invoke([command, "-c", str(src)], {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}, verbose)
        line = error_line(result)
        assert line.startswith(f"error: cannot reach the Hub at http://127.0.0.1:{port} (connection refused) to fetch "
                               "org/tiny: check HF_ENDPOINT")
        if not verbose:
            assert result.stderr.count("\n") == 1
    assert fast_retries == []


def test_refused_connection_is_not_retried_and_says_so(tmp_path, tiny_gguf, fast_retries):
    port = closed_port()
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    result = invoke(["publish", "-c", str(cfg), "--skip-bench"], {"HF_ENDPOINT": f"http://127.0.0.1:{port}",
                                                                  "HF_TOKEN": WRITE_TOKEN})
    line = error_line(result)
    assert line.startswith(f"error: cannot reach the Hub at http://127.0.0.1:{port} (connection refused) while "
                           "reading the repo: check HF_ENDPOINT")
    assert "lost the connection" not in line and fast_retries == []
    assert_not_shown(result, WRITE_TOKEN)


@pytest.mark.parametrize(("where", "value"), [("HF_ENDPOINT", "127.0.0.1:8080"), ("HF_ENDPOINT", "http://[::1"),
                                              ("target.endpoint", "ftp://hub.example")])
def test_endpoint_that_is_not_a_url_is_refused_before_any_work(tmp_path, tiny_gguf, fast_retries, where, value):
    extra = f"  endpoint: {value}\n" if where == "target.endpoint" else ""
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf, extra=extra))
    env = {"HF_ENDPOINT": value} if where == "HF_ENDPOINT" else {}
    line = error_line(invoke(["publish", "-c", str(cfg), "--skip-bench"], env))
    assert line.startswith(f"error: {where} {value!r} is not a Hub address (") and "https://huggingface.co" in line
    assert not (load_config(cfg).workdir / "out").exists() and fast_retries == []


def test_dropped_connection_is_retried_then_reported_as_lost(tmp_path, tiny_gguf, fast_retries, dropping_server):
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    result = invoke(["publish", "-c", str(cfg), "--skip-bench"], {"HF_ENDPOINT": dropping_server.endpoint,
                                                                  "HF_TOKEN": WRITE_TOKEN})
    line = error_line(result)
    assert line.startswith(f"error: lost the connection to {dropping_server.endpoint} while reading the repo "
                           "(dropped), also after retries") and "rerun to resume" in line
    assert len(fast_retries) == 5 and dropping_server.connections >= 6


def test_dropped_connection_while_fetching_a_source_is_one_line(tmp_path, dropping_server):
    src = write_config(tmp_path / "s", HUB_SOURCE)
    line = error_line(invoke(["plan", "-c", str(src)], {"HF_ENDPOINT": dropping_server.endpoint}))
    assert line.startswith(f"error: lost the connection to {dropping_server.endpoint} while fetching org/tiny "
                           "(dropped): check the network, then rerun")


def test_endpoint_precedence(monkeypatch):
    """An explicit endpoint, then HF_ENDPOINT, then target.endpoint, then huggingface.co (as `publish --help` says)."""
    target = PushTarget(repo="a/b", endpoint="http://configured:1/")
    assert hub_endpoint(None) == "https://huggingface.co"
    assert hub_endpoint(target) == "http://configured:1"
    monkeypatch.setenv("HF_ENDPOINT", "http://from-env:2")
    assert hub_endpoint(target) == "http://from-env:2"
    assert hub_endpoint(target, "http://explicit:3") == "http://explicit:3"


# --- flags and names ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--create-pr", "--revision", "dev"], "--create-pr opens a pull request against main; use it without --revision"),
    (["--create-pr", "--tag", "v1"], "--tag marks a commit on a branch"),
    (["--no-card", "--only", "q8_0", "--create-pr"], "the job matrix commits to a branch instead"),
    (["--dry-run", "--revision", "../main"], "--revision '../main' is not a valid branch name (it contains '..')"),
    (["--dry-run", "--tag", "bad tag!"], "--tag 'bad tag!' is not a valid tag name (it contains a space"),
    (["--dry-run", "--revision", "dev.lock"], "is not a valid branch name (it contains a part ending in '.lock')"),
    (["--dry-run", "--tag", "v1:latest"], "is not a valid tag name (it contains one of ~ ^ : ? * [ \\)"),
    (["--dry-run", "--revision", "feature/"], "(it contains an empty path part"),
])
def test_bad_flags_and_ref_names_are_refused_before_any_work(local_hub, tmp_path, tiny_gguf, args, expected):
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    line = error_line(invoke(["publish", "-c", str(cfg), "--skip-bench", *args], {"HF_ENDPOINT": local_hub.endpoint}))
    assert expected in line
    assert not load_config(cfg).workdir.exists() and requests_made(local_hub) == 0


def test_good_ref_names_pass(local_hub, tmp_path, tiny_gguf):
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    result = invoke(["publish", "-c", str(cfg), "--skip-bench", "--dry-run", "--revision", "release/v1.2_rc-1",
                     "--tag", "v1.2"], {"HF_ENDPOINT": local_hub.endpoint})
    assert result.exit_code == 0, result.output
    assert "would create branch release/v1.2_rc-1 from main" in result.stdout and "and tag v1.2" in result.stdout


def test_card_only_with_nothing_to_name_is_one_line(local_hub, tmp_path, tiny_gguf):
    cfg_path = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf))
    env = {"HF_ENDPOINT": local_hub.endpoint}
    line = error_line(invoke(["publish", "-c", str(cfg_path), "--card-only"], env))
    assert "holds no built or merged files; run `hubbot merge`" in line
    from hubbot.build.run import build

    build(load_config(cfg_path))
    line = error_line(invoke(["publish", "-c", str(cfg_path), "--card-only"], env))
    assert f"--card-only: {REPO} (main) at {local_hub.endpoint} does not exist yet" in line
    assert local_hub.write_requests() == 0 and local_hub.load_repo(REPO) is None
    HfApi(endpoint=local_hub.endpoint, token=WRITE_TOKEN).create_repo(REPO)
    line = error_line(invoke(["publish", "-c", str(cfg_path), "--card-only", "--dry-run"], env))
    assert "none of the 2 merged files is on" in line and "--no-card" in line
    assert "README.md" not in local_hub.files(REPO)


def test_repo_name_with_invalid_characters_says_which(tmp_path, tiny_gguf):
    cfg = write_config(tmp_path / "p", tiny_ladder_yaml(tiny_gguf, repo="me/tiny GGUF!"))
    line = error_line(invoke(["plan", "-c", str(cfg)], {}), code=2)
    assert "target repo 'me/tiny GGUF!' contains characters a Hub repo name cannot have (' ' '!')" in line
