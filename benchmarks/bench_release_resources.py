"""The resource plan against measurement: every job of the 270M example release, run for real.

Runs the jobs of a release of ``examples/gemma-3-270m/variants.yaml`` with the commands
``.github/workflows/release.yml`` runs (``tests/test_release_flow.py`` replays the same flow),
against a local Hub on 127.0.0.1. Each job gets its own HOME (Hub cache), work folder and temp
folder; jobs share only the Hub and an artifacts folder that stands in for the workflow's
artifacts (plan.json, staged.json, the importance matrix, the reference distributions, the
sensitivity of ``recipe: auto`` files, each build job's results):

- convert: ``hubbot ci matrix --github-output``, ``hubbot plan --check-job convert``, ``hubbot stage
  push`` (expand the package's Q4_K_M to BF16, build the staged bf16 variant and push it, pinned),
  ``hubbot plan --json`` (plan.json, the estimates printed below) and ``hubbot plan``;
- imatrix: ``plan --check-job imatrix``, ``stage fetch``, ``hubbot imatrix`` (when the matrix says
  imatrix=true), ``hubbot bench --reference-only`` and, when it says auto=true, ``hubbot plan
  --measure --no-dry-run --json``; its cache/imatrix, cache/bench-reference and cache/budget/*.json
  become the artifacts;
- build:<variant>, one per matrix entry: ``plan --check-job build``, ``stage fetch``, the artifacts
  its entry needs copied into its work folder, ``hubbot build``, ``hubbot bench --require-reference``,
  ``hubbot publish --no-card --skip-bench`` and ``hubbot ci export``; a failed step fails that job only
  (the workflow's fail-fast: false), and the export still runs;
- card: ``plan --check-job card``, ``hubbot merge`` of every results-* folder, ``hubbot publish
  --card-only``.

Per job it samples, every 0.2 s, the disk its three folders use (allocated blocks, hard links
once) and the summed RSS of its process tree, takes CPU time (user + system of every process) from
``wait4``, and prints a Markdown table next to the estimate of the plan the convert job wrote
(``hubbot plan --json``, reference distributions as artifacts). Ratios are estimate / measured:
above 1 the plan is conservative. Acceptance bar: disk within 1.5x either way. The CPU estimate is
the plan's CPU seconds (compute, model passes, serial work) plus its generation time for the speed
test times the threads (llama.cpp's threads stay busy while generation waits on memory); the wall
estimate is the plan's time on ``--threads`` cores.

What is still approximate: the Hub's upload and download run on one machine over loopback, so the
plan's network time (100 MB/s) has no counterpart here; the CPU time includes Python start-up and
the imports of every command (a few seconds each, five to seven commands per job), which the plan
does not count; RSS is sampled every 0.2 s, so a peak shorter than that can be missed; on a shared
machine, CPU and wall time of the model passes grow with what else runs (llama.cpp's threads
spin while they wait for one another).

    python benchmarks/bench_release_resources.py [--only bf16,q8_0,q4_k,iq2_xxs] [--threads 2] [--max-shard-size 400MB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gemma-3-270m" / "variants.yaml"
TOKEN = "hf_bench_release_write_token"
CONFIG = ("-c", "variants.yaml")


def folder_bytes(folders: list[Path]) -> int:
    """Allocated bytes of every file under ``folders`` (each inode once; symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue  # renamed or deleted while we looked
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def become_subreaper() -> None:
    """Adopt orphaned descendants (prctl PR_SET_CHILD_SUBREAPER), so their CPU time reaches wait4:
    the quantizer runs under multiprocessing's forkserver, which hubbot leaves to exit on its own."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def tree_rss(pid: int, with_pids: bool = False):
    """Summed RSS of ``pid`` and all its descendants (and their pids, ``with_pids``)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    family, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in family:
                family.add(child)
                frontier.append(child)
    total = sum(rss.get(p, 0) for p in family)
    return (total, family) if with_pids else total


def reap(pid: int, timeout: float = 30.0) -> float:
    """CPU seconds of an adopted orphan (and of the children it waited for) once it exits; 0 when
    ``pid`` is not our child (its parent waited for it, so its time is in that parent's figures)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return 0.0
        if done:
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            return 0.0  # still running: left out (the job's table row says less than it used)
        time.sleep(0.1)


class StepFailed(Exception):
    """One hubbot command of a job exited non-zero."""


class Job:
    """One job: its folders, environment, and the peaks measured over its commands."""

    def __init__(self, root: Path, name: str, config: dict, base_env: dict[str, str]) -> None:
        self.name = name
        self.dir = root / "jobs" / name.replace(":", "-")
        self.home, self.tmp, self.work = self.dir / "home", self.dir / "tmp", self.dir / "work"
        for d in (self.home, self.tmp, self.work):
            d.mkdir(parents=True, exist_ok=True)
        (self.work / "variants.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = {**base_env, "HOME": str(self.home), "TMPDIR": str(self.tmp),
                    "HF_HOME": str(self.home / ".cache" / "huggingface")}
        for key in ("XDG_CACHE_HOME", "HF_HUB_CACHE", "HUBBOT_CONVERTER_VENV"):
            self.env.pop(key, None)
        self.peak_disk = self.peak_rss = 0
        self.cpu = self.wall = 0.0
        self.log: list[str] = []
        self.failed: str | None = None

    def run(self, *args: str, stdout: Path | None = None) -> str:
        """``hubbot ARGS`` in this job; stdout returned (and kept in ``stdout``), the peaks updated while it runs."""
        out = stdout or self.dir / "stdout.txt"
        with open(out, "w") as fh, open(self.dir / "stderr.txt", "a") as err:
            err.write(f"\n$ hubbot {' '.join(args)}\n")
            err.flush()
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "hubbot", *args], cwd=self.work, env=self.env,
                                    stdout=fh, stderr=err)
            done = threading.Event()
            sampler = threading.Thread(target=self._sample, args=(proc.pid, done), daemon=True)
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            done.set()
            sampler.join()
            cpu = usage.ru_utime + usage.ru_stime
            for orphan in self.seen - {proc.pid}:  # descendants hubbot did not wait for, now ours
                cpu += reap(orphan)
        # ru_* of wait4 covers the process and every child it waited for (the quantizer, the converter).
        wall = time.perf_counter() - start
        self.wall += wall
        self.cpu += cpu
        self.peak_disk = max(self.peak_disk, folder_bytes([self.home, self.work, self.tmp]))
        step = " ".join(a for a in args[:2] if not a.startswith("-"))
        self.log.append(f"{step} ({cpu:.0f} s CPU, {wall:.0f} s)")
        if proc.returncode != 0:
            tail = (self.dir / "stderr.txt").read_text().splitlines()[-3:]
            self.failed = f"hubbot {' '.join(args)} failed ({proc.returncode}): " + " | ".join(tail)
            raise StepFailed(self.failed)
        return out.read_text()

    def clear(self) -> None:
        """Delete the job's folders once measured (a runner is discarded after its job, too)."""
        for d in (self.home, self.work, self.tmp):
            shutil.rmtree(d, ignore_errors=True)

    def _sample(self, pid: int, done: threading.Event) -> None:
        self.seen: set[int] = set()
        while not done.is_set():
            rss, pids = tree_rss(pid, with_pids=True)
            self.peak_rss = max(self.peak_rss, rss)
            self.seen |= pids
            self.peak_disk = max(self.peak_disk, folder_bytes([self.home, self.work, self.tmp]))
            done.wait(0.2)


def example_config(args) -> dict:
    """The example config with its text paths absolute and the threads (and shard size) set."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    for section in ("imatrix", "benchmark"):
        key = "calibration" if section == "imatrix" else "text"
        cfg[section][key]["path"] = str((EXAMPLE.parent / cfg[section][key]["path"]).resolve())
    cfg["build"] = {"threads": args.threads}
    cfg["benchmark"]["threads"] = args.threads
    if args.max_shard_size:
        cfg["target"]["max_shard_size"] = args.max_shard_size
    return cfg


def copy_in(src: Path, dest: Path) -> None:
    """An artifact downloaded into a job's work folder (actions/download-artifact)."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="the release's variants (comma separated; the workflow's `only` input)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-shard-size", default=None,
                    help="set target.max_shard_size (e.g. 400MB: BF16/F16 are staged and uploaded as shards)")
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from hubbot.testing.localhub import LocalHub

    become_subreaper()

    # A short root: llama.cpp's child process talks over a Unix socket in TMPDIR (108-byte limit).
    root = args.keep or Path(tempfile.mkdtemp(prefix="hubbot-rel-"))
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    (artifacts / "plan").mkdir(parents=True, exist_ok=True)
    cfg = example_config(args)
    hub = LocalHub(root / "hubstore")
    hub.add_token(TOKEN, cfg["target"]["repo"].split("/")[0], write=True)
    hub.start()
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HUBBOT_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    only = [n for n in args.only.replace(",", " ").split() if n]
    only_args = [a for n in only for a in ("--only", n)]
    plan_file, staged_file = artifacts / "plan" / "plan.json", artifacts / "plan" / "staged.json"
    jobs: list[Job] = []
    estimates: dict[str, dict] = {}

    def new_job(name: str) -> Job:
        if jobs and args.keep is None:
            jobs[-1].clear()  # only one job's files on disk at a time
        jobs.append(Job(root, name, cfg, env))
        return jobs[-1]

    start = time.perf_counter()
    try:
        convert = new_job("convert")
        gh_output = convert.dir / "github_output"
        convert.run("ci", "matrix", *CONFIG, "--only", args.only, "--github-output", str(gh_output),
                    stdout=artifacts / "plan" / "matrix.json")
        outputs = dict(line.split("=", 1) for line in gh_output.read_text().splitlines())
        convert.run("plan", *CONFIG, "--check-job", "convert")
        convert.run("stage", "push", *CONFIG, "-o", str(staged_file))
        convert.run("plan", *CONFIG, *only_args, "--json", stdout=plan_file)
        convert.run("plan", *CONFIG, *only_args, stdout=convert.dir / "plan.txt")
        estimates = {row["name"]: row for row in json.loads(plan_file.read_text())["resources"]["jobs"]}
        workdir = outputs["workdir"]

        im = new_job("imatrix")
        im.run("plan", *CONFIG, "--check-job", "imatrix", "--plan-file", str(plan_file))
        im.run("stage", "fetch", *CONFIG, "--staged", str(staged_file), "--job", "imatrix")
        if outputs["imatrix"] == "true":
            im.run("imatrix", *CONFIG, "--json")
        im.run("bench", *CONFIG, "--reference-only")
        cache = im.work / workdir / "cache"
        if outputs["auto"] == "true":
            im.run("plan", *CONFIG, "--measure", "--no-dry-run", "--json", stdout=im.tmp / "measured-plan.json")
            (artifacts / "sensitivity").mkdir(exist_ok=True)
            for f in (cache / "budget").glob("*.json"):
                shutil.copy2(f, artifacts / "sensitivity" / f.name)
        copy_in(cache / "imatrix", artifacts / "imatrix")
        copy_in(cache / "bench-reference", artifacts / "bench-reference")

        for entry in json.loads(outputs["matrix"])["include"]:
            name = entry["variant"]
            job = new_job(f"build:{name}")
            cache = job.work / workdir / "cache"
            try:
                job.run("plan", *CONFIG, "--check-job", "build", "--only", name, "--plan-file", str(plan_file))
                job.run("stage", "fetch", *CONFIG, "--staged", str(staged_file), "--job", f"build:{name}")
                if entry["imatrix"]:
                    copy_in(artifacts / "imatrix", cache / "imatrix")
                if entry["auto"]:
                    copy_in(artifacts / "sensitivity", cache / "budget")
                copy_in(artifacts / "bench-reference", cache / "bench-reference")
                job.run("build", *CONFIG, "--only", name)
                job.run("bench", *CONFIG, "--only", name, "--require-reference")
                job.run("publish", *CONFIG, "--only", name, "--no-card", "--skip-bench")
            except StepFailed:
                pass  # fail-fast: false; the export below runs anyway (if: !cancelled())
            try:
                job.run("ci", "export", *CONFIG, "--only", name, "-o", str(artifacts / f"results-{name}"))
            except StepFailed:
                pass

        card = new_job("card")
        card.run("plan", *CONFIG, "--check-job", "card", "--plan-file", str(plan_file))
        card.run("merge", *CONFIG, *sorted(str(p) for p in artifacts.glob("results-*")))
        card.run("publish", *CONFIG, "--card-only")
    except StepFailed as exc:
        print(f"stopped: {exc}", file=sys.stderr)
    finally:
        hub.close()
        report(jobs, estimates, args, time.perf_counter() - start)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def cpu_estimate(row: dict, threads: int) -> float:
    """CPU seconds the plan implies on ``threads`` threads: compute, model passes and serial work, plus
    the speed test's generation, which the plan counts as memory-bound time with every thread busy."""
    from hubbot.build import throughput as tp

    bandwidth = tp.THROUGHPUT["tg_bandwidth"].value * min(threads, tp.TG_THREADS_CAP.value)
    return row["cpu_seconds"] + row["serial_seconds"] + threads * row["generation_bytes"] / bandwidth


def report(jobs: list[Job], estimates: dict[str, dict], args, total: float) -> None:
    from hubbot.build.jobs import JobEstimate

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; threads {args.threads}; "
          f"max_shard_size {args.max_shard_size or 'as in the example'}; {total / 60:.1f} min in all; MB = 10^6 bytes; ratio = estimate / measured")
    print()
    print(f"| job | disk est | disk measured | ratio | memory est | peak RSS | ratio | CPU est (s, {args.threads} threads) "
          "| CPU measured (s) | wall (s) measured (est) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 1.0
    for job in jobs:
        row = estimates.get(job.name)
        measured = f"{job.peak_disk / 1e6:.1f} MB"
        rss, cpu = f"{job.peak_rss / 1e6:.0f} MB", f"{job.cpu:.0f}"
        if row is None:
            print(f"| `{job.name}` | - | {measured} | - | - | {rss} | - | - | {cpu} | {job.wall:.0f} |")
            continue
        d_ratio = row["disk"] / max(1, job.peak_disk)
        m_ratio = row["memory"] / max(1, job.peak_rss)
        if job.failed is None:
            worst = max(worst, d_ratio, 1 / d_ratio)
        est = JobEstimate.from_json(row)
        cpu_est = cpu_estimate(row, args.threads)
        print(f"| `{job.name}` | {row['disk'] / 1e6:.1f} MB | {measured} | {d_ratio:.2f} | {row['memory'] / 1e6:.0f} MB "
              f"| {rss} | {m_ratio:.2f} | {cpu_est:.0f} | {cpu} | {job.wall:.0f} ({est.wall_seconds(args.threads):.0f}) |")
    print()
    print(f"disk: worst estimate/measurement {worst:.2f}x (acceptance: within 1.5x) -> "
          f"{'PASS' if worst <= 1.5 else 'FAIL'}")
    for job in jobs:
        print(f"  {job.name}: " + "; ".join(job.log) + (f"\n    FAILED: {job.failed}" if job.failed else ""))


if __name__ == "__main__":
    main()
