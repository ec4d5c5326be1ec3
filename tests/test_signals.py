"""SIGTERM (a CI cancel) and SIGINT stop hubbot cleanly: children gone, no partial file, one line.

Each test starts ``python -m hubbot ...`` as a real process in its own process group, waits until
it is busy (the quantizer's child writing its partial file, the imatrix child computing, the
benchmark evaluating, the upload under way), sends the signal and checks the exit code, the
one-line message, that no process of the group still runs, that no ``.*.partial`` is left, and
for publish that the local Hub holds exactly what it held before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support.configs import write_config
from support.paths import DATA_DIR, REPO_ROOT

from hubbot.testing.localhub import LocalHub

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")

TERMINATED = "error: terminated (SIGTERM); rerun the same command to resume"
INTERRUPTED = "error: interrupted; rerun the same command to resume"


class Hubbot:
    """``python -m hubbot <args>`` in its own process group (pgid = pid), stderr read as it comes."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "hubbot", *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_until(self, ready, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"hubbot exited ({self.proc.returncode}) before {what}:\n" + "\n".join(self.lines[-20:]))
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"hubbot never got to {what}:\n" + "\n".join(self.lines[-20:]))
            time.sleep(0.02)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def workers(self) -> set[int]:
        """The processes doing llama.cpp work: not hubbot, not multiprocessing's fork server or
        resource tracker (its direct children that only serve)."""
        pid = self.proc.pid
        return {p for p, (_, ppid, cmd) in group(pid).items()
                if p != pid and not (ppid == pid and ("forkserver" in cmd or "resource_tracker" in cmd))}

    def stop(self, *signals: int, timeout: float = 120) -> tuple[int, list[str]]:
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.2)
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc, self.lines


def group(pgid: int) -> dict[int, tuple[str, int, str]]:
    """pid -> (state, ppid, command line) of every process in the process group ``pgid``."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            found[int(d.name)] = (fields[0], int(fields[1]), cmd)
    return found


def assert_clean_exit(run: Hubbot, rc: int, lines: list[str], workers: set[int], workdir: Path,
                      expected: tuple[int, str] = (143, TERMINATED)) -> None:
    assert rc == expected[0], "\n".join(lines[-20:])
    # One line says what happened: the last one, and nothing else on stderr is an error or a traceback.
    assert lines and lines[-1] == expected[1], "\n".join(lines[-20:])
    assert not [ln for ln in lines[:-1] if ln.startswith("error:") or "Traceback" in ln or "Exception ignored" in ln]
    # The workers were reaped: gone from the process table, not even zombies. The fork server and
    # the resource tracker end when hubbot's pipes close; this machine's init may not reap them,
    # so they may linger as zombies, but nothing of the group may still run.
    deadline = time.monotonic() + 20
    while True:
        members = group(run.proc.pid)
        running = {p: m for p, m in members.items() if m[0] != "Z"}
        leftover = workers & set(members)
        if not running and not leftover:
            break
        assert time.monotonic() < deadline, f"still there after hubbot exited: {running or leftover}"
        time.sleep(0.1)
    partials = [p for p in workdir.rglob("*.partial")]
    assert partials == []


def _gemma_project(folder: Path, model: Path, variants: str, extra: str = "") -> Path:
    return write_config(folder, textwrap.dedent(f"""\
        source: {{path: {model}}}
        target: {{repo: me/gemma-GGUF, gated: false}}
        card: {{model_name: gemma-3-270m}}
        build: {{threads: 2}}
        """) + extra + "variants:\n" + variants)


def _growing_partial(out: Path):
    def ready() -> bool:
        return any(p.stat().st_size > 0 for p in out.glob(".*.partial") if p.exists())
    return ready


@pytest.mark.slow
@pytest.mark.parametrize("signals, expected", [
    ((signal.SIGTERM,), (143, TERMINATED)),
    # What a runner sends on cancel: the first signal wins, the second cannot cut the clean-up short.
    ((signal.SIGINT, signal.SIGTERM), (130, INTERRUPTED)),
], ids=["sigterm", "sigint-then-sigterm"])
def test_build_stops_the_quantizer_and_removes_its_partial_file(tmp_path, gemma_bf16, signals, expected):
    _gemma_project(tmp_path, gemma_bf16, "  - {name: q4_k_m, type: Q4_K_M}\n")
    run = Hubbot(["build"], tmp_path)
    out = tmp_path / ".hubbot" / "out"
    run.wait_until(lambda: run.said("building gemma-3-270m-q4_k_m.gguf"), "the build")
    run.wait_until(lambda: _growing_partial(out)() and run.workers(), "the quantizer writing")
    workers = run.workers()
    rc, lines = run.stop(*signals)
    assert_clean_exit(run, rc, lines, workers, tmp_path, expected)
    assert not (out / "gemma-3-270m-q4_k_m.gguf").exists()


@pytest.mark.slow
def test_imatrix_stops_the_collection_child(tmp_path, gemma_bf16):
    _gemma_project(tmp_path, gemma_bf16, "  - {name: iq2_xxs, type: IQ2_XXS}\n", extra=textwrap.dedent(f"""\
        imatrix:
          calibration: {{path: {DATA_DIR / 'calibration.txt'}, name: calibration.txt}}
          ctx: 512
        """))
    run = Hubbot(["imatrix"], tmp_path)
    run.wait_until(lambda: run.said("computing the importance matrix"), "the collection")
    run.wait_until(run.workers, "the collection child")
    time.sleep(2)  # let it load the model and start computing
    workers = run.workers()
    assert workers
    rc, lines = run.stop(signal.SIGTERM)
    assert_clean_exit(run, rc, lines, workers, tmp_path)
    work = tmp_path / ".hubbot"
    assert not list(work.rglob("*.imatrix.gguf"))


@pytest.mark.slow
def test_bench_stops_mid_evaluation(tmp_path, gemma_bf16):
    from hubbot.build.run import build
    from hubbot.config import load_config

    cfg_path = _gemma_project(tmp_path, gemma_bf16, "  - {name: q8_0, type: Q8_0}\n", extra=textwrap.dedent(f"""\
        benchmark:
          text: {{path: {DATA_DIR / 'evaluation.txt'}}}
          chunks: 8
        """))
    build(load_config(cfg_path))
    run = Hubbot(["bench"], tmp_path)
    # The reference (the source) is evaluated first and stores its distributions under a .partial folder.
    run.wait_until(lambda: run.said("computing the reference distributions"), "the benchmark")
    run.wait_until(lambda: list((tmp_path / ".hubbot" / "cache").rglob("*.partial")), "the reference pass")
    time.sleep(1)
    rc, lines = run.stop(signal.SIGTERM)
    assert_clean_exit(run, rc, lines, set(), tmp_path)
    assert not list((tmp_path / ".hubbot" / "results").rglob("*.json"))


def _hub_state(storage: Path) -> tuple[list[str], dict[str, int]]:
    hub = LocalHub(storage)
    try:
        return [c["id"] for c in hub.commits("me/gemma-GGUF")], {k: v["size"] for k, v in hub.files("me/gemma-GGUF").items()}
    finally:
        hub.close()


@pytest.mark.slow
def test_publish_stopped_while_building_or_uploading_commits_nothing(tmp_path, gemma_bf16):
    base = "  - {name: q8_0, type: Q8_0}\n"
    _gemma_project(tmp_path, gemma_bf16, base)
    first = Hubbot(["publish", "--local-hub", "--skip-bench"], tmp_path)
    assert first.proc.wait(timeout=900) == 0, "\n".join(first.lines[-20:])
    storage = tmp_path / ".hubbot" / "localhub"
    before = _hub_state(storage)
    assert "gemma-3-270m-q8_0.gguf" in before[1]

    # A variant is added; the next publish is stopped while it builds...
    _gemma_project(tmp_path, gemma_bf16, base + "  - {name: q4_k_m, type: Q4_K_M}\n")
    run = Hubbot(["publish", "--local-hub", "--skip-bench"], tmp_path)
    run.wait_until(lambda: run.said("building gemma-3-270m-q4_k_m.gguf"), "the build")
    run.wait_until(lambda: _growing_partial(tmp_path / ".hubbot" / "out")() and run.workers(), "the quantizer writing")
    workers = run.workers()
    rc, lines = run.stop(signal.SIGTERM)
    assert_clean_exit(run, rc, lines, workers, tmp_path)
    assert _hub_state(storage) == before

    # ...and the one after that while it uploads the new file to the Hub.
    run = Hubbot(["publish", "--local-hub", "--skip-bench"], tmp_path)
    uploads = storage / "tmp"
    run.wait_until(lambda: any(uploads.iterdir()), "the upload")
    rc, lines = run.stop(signal.SIGTERM)
    assert_clean_exit(run, rc, lines, set(), tmp_path)
    assert _hub_state(storage) == before

    # Rerunning the same command resumes and publishes both.
    last = Hubbot(["publish", "--local-hub", "--skip-bench"], tmp_path)
    assert last.proc.wait(timeout=900) == 0, "\n".join(last.lines[-20:])
    commits, files = _hub_state(storage)
    assert len(commits) > len(before[0]) and commits[-len(before[0]):] == before[0]
    assert {"gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q8_0.gguf", "README.md"} <= set(files)


def test_a_signal_inside_llama_cpps_log_callback_is_not_lost(tmp_path, tiny_gguf):
    """ctypes drops an exception raised in a C callback: a SIGTERM that lands while llama.cpp logs
    (a model load) must still stop the run once the C call returns."""
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent("""\
        import logging, os, signal, sys
        from hubbot import interrupts
        from hubbot.llama.session import LlamaModel

        sent = []

        class SignalOnFirstLine(logging.Handler):
            def emit(self, record):  # runs inside llama.cpp's log callback
                if not sent:
                    sent.append(record.getMessage())
                    os.kill(os.getpid(), signal.SIGTERM)
                    sum(range(10000))  # Python code after the kill: the handler runs here

        logger = logging.getLogger("hubbot.llama.logs")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(SignalOnFirstLine())
        with interrupts.handled():
            try:
                LlamaModel(sys.argv[1]).close()
            except interrupts.Interrupted as exc:
                print("interrupted", exc.signum, bool(sent))
            else:
                print("loaded", bool(sent))
        """))
    run = subprocess.run([sys.executable, str(script), str(tiny_gguf)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["interrupted", "15", "True"]
    assert "Exception ignored" not in run.stderr


def test_a_helper_process_is_killed_when_hubbot_is_stopped():
    """The converter and pip run as plain subprocesses: an interrupt kills and reaps them first."""
    from hubbot import interrupts

    with pytest.raises(interrupts.Interrupted):
        with interrupts.stopped_on_error(subprocess.Popen(["sleep", "60"])) as proc:
            raise interrupts.Interrupted(signal.SIGTERM)
    assert proc.returncode == -signal.SIGKILL
