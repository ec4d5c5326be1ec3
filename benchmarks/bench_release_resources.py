"""The resource plan against measurement: every job of the 270M example release, run for real.

Runs the jobs of a release of ``examples/gemma-3-270m/variants.yaml`` as hubbot commands against a
local Hub on 127.0.0.1, each job in its own HOME (Hub cache, converter venv), work folder and temp
folder; jobs share only the Hub and an artifacts folder. Per job it samples, every 0.2 s, the disk
its three folders use (allocated blocks, hard links once) and the summed RSS of its process tree,
takes CPU time from ``wait4``, and prints them next to the plan's estimate (``plan_project(...,
reference="rebuilt")``, the mode that describes today's commands). Acceptance bar: disk within
1.5x either way.

The job split follows the release flow as far as today's commands allow:

- convert: ``hubbot build --only bf16`` (the package's Q4_K_M expanded to BF16 = the conversion of
  this example; then the staged bf16 variant), ``hubbot publish --only bf16 --no-card``, ``hubbot
  plan --json`` (the plan later jobs check themselves against);
- imatrix: source = the staged bf16 on the Hub, pinned to the convert job's commit; ``hubbot plan
  --check-job imatrix``, ``hubbot imatrix``, then the reference distributions: ``hubbot build --only
  bf16`` and ``hubbot bench --only bf16``; artifacts: the imatrix and reference-store folders;
- build:<variant>: same source; check, the artifacts copied in, ``hubbot build --only V --only bf16``,
  ``hubbot bench --only V`` (reuses the reference store), ``hubbot publish --only V --no-card``,
  ``hubbot ci export``;
- card: ``hubbot merge`` of the build jobs' exports, ``hubbot publish --card-only``.

What today's commands cannot do yet (the release-flow work): ``hubbot bench`` measures KLD against a
built file, so the imatrix job and every build job build the bf16 reference again from the staged
copy (the plan's "rebuilt" mode counts it); that rebuilt bf16 differs from the published one in its
hubbot.source.* metadata, so the card job has no manifest entry for the published bf16 and leaves
it off the card; the convert job of a package source cannot check itself before expanding it.

    python benchmarks/bench_release_resources.py [--only q4_k,iq2_xxs] [--threads 2] [--keep DIR]
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
UPSTREAM_CARD = "---\nlicense: gemma\n---\n# Gemma 3 270M\n\nThe upstream card, as a local copy.\n"


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


def tree_rss(pid: int) -> int:
    """Summed RSS of ``pid`` and all its descendants."""
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
    return sum(rss.get(p, 0) for p in family)


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
        self.peak_disk = self.peak_rss = self.max_rss = 0
        self.cpu = self.wall = 0.0
        self.log: list[str] = []

    def run(self, *args: str) -> str:
        """``hubbot ARGS`` in this job; stdout returned, the peaks updated while it runs."""
        out = self.dir / "stdout.txt"
        with open(out, "w") as fh, open(self.dir / "stderr.txt", "a") as err:
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
        self.wall += time.perf_counter() - start
        self.cpu += usage.ru_utime + usage.ru_stime
        self.max_rss = max(self.max_rss, usage.ru_maxrss * 1024)
        self.peak_disk = max(self.peak_disk, folder_bytes([self.home, self.work, self.tmp]))
        self.log.append(" ".join(args[:4]))
        if proc.returncode != 0:
            tail = (self.dir / "stderr.txt").read_text().splitlines()[-5:]
            raise SystemExit(f"job {self.name}: hubbot {' '.join(args)} failed ({proc.returncode}):\n" + "\n".join(tail))
        return out.read_text()

    def _sample(self, pid: int, done: threading.Event) -> None:
        while not done.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss(pid))
            self.peak_disk = max(self.peak_disk, folder_bytes([self.home, self.work, self.tmp]))
            done.wait(0.2)


def configs(args, commit: str | None, card: Path) -> dict:
    """The example config (text paths absolute, threads and shard size set); with ``commit``, the
    staged config: source = the bf16 file on the Hub at that commit."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    for section in ("imatrix", "benchmark"):
        key = "calibration" if section == "imatrix" else "text"
        cfg[section][key]["path"] = str((EXAMPLE.parent / cfg[section][key]["path"]).resolve())
    cfg["build"] = {"threads": args.threads}
    cfg["benchmark"]["threads"] = args.threads
    cfg["target"]["max_shard_size"] = args.max_shard_size
    if commit:
        staged = next(v for v in cfg["variants"] if v["type"] == "BF16")
        stem = f"{cfg['card']['model_name']}-{staged['name']}"
        cfg["source"] = {"repo": cfg["target"]["repo"], "file": args.staged_file or f"{stem}.gguf", "revision": commit,
                         "base_model": cfg["source"]["base_model"], "card": str(card)}
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="build jobs for these variants only (comma separated)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-shard-size", default="400MB", help="target.max_shard_size, so BF16/F16 go up as shards")
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = ap.parse_args()
    args.staged_file = None
    sys.path.insert(0, str(ROOT))
    from huggingface_hub import HfApi

    from hubbot.testing.localhub import LocalHub

    root = args.keep or Path(tempfile.mkdtemp(prefix="hubbot-bench-release-"))
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    card = root / "upstream-README.md"
    card.write_text(UPSTREAM_CARD)
    base = configs(args, None, card)
    hub = LocalHub(root / "hubstore")
    hub.add_token(TOKEN, base["target"]["repo"].split("/")[0], write=True)
    hub.start()
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HUBBOT_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    jobs: list[Job] = []
    try:
        staged_name = next(v["name"] for v in base["variants"] if v["type"] == "BF16")
        convert = Job(root, "convert", base, env)
        jobs.append(convert)
        convert.run("build", "--only", staged_name)
        convert.run("publish", "--only", staged_name, "--no-card", "--skip-bench")
        plan_file = artifacts / "plan.json"
        plan_file.write_text(convert.run("plan", "--json"))
        estimates = estimate(convert)
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        repo = base["target"]["repo"]
        commit = api.repo_info(repo).sha
        files = sorted(f for f in api.list_repo_files(repo, revision=commit) if f.endswith(".gguf"))
        args.staged_file = files[0]  # the whole file, or its first shard
        staged = configs(args, commit, card)

        im = Job(root, "imatrix", staged, env)
        jobs.append(im)
        im.run("plan", "--check-job", "imatrix", "--plan-file", str(plan_file))
        im.run("imatrix")
        im.run("build", "--only", staged_name)
        im.run("bench", "--only", staged_name)
        for sub in ("imatrix", "bench-reference"):
            shutil.copytree(im.work / ".hubbot" / "cache" / sub, artifacts / sub, dirs_exist_ok=True)

        wanted = [n for n in args.only.replace(",", " ").split() if n]
        for v in base["variants"]:
            if v["name"] == staged_name or (wanted and v["name"] not in wanted):
                continue
            job = Job(root, f"build:{v['name']}", staged, env)
            jobs.append(job)
            job.run("plan", "--check-job", "build", "--only", v["name"], "--plan-file", str(plan_file))
            for sub in ("imatrix", "bench-reference"):
                shutil.copytree(artifacts / sub, job.work / ".hubbot" / "cache" / sub, dirs_exist_ok=True)
            job.run("build", "--only", v["name"], "--only", staged_name)
            job.run("bench", "--only", v["name"])
            if "computing the reference distributions" in (job.dir / "stderr.txt").read_text():
                job.log.append("(recomputed the reference distributions!)")
            job.run("publish", "--only", v["name"], "--no-card", "--skip-bench")
            job.run("ci", "export", "--only", v["name"], "-o", str(artifacts / "results" / v["name"]))

        card_job = Job(root, "card", staged, env)
        jobs.append(card_job)
        folders = sorted(str(p) for p in (artifacts / "results").iterdir()) if (artifacts / "results").is_dir() else []
        if folders:
            card_job.run("merge", *folders)
            card_job.run("publish", "--card-only")
    finally:
        hub.close()
        report(jobs, estimates if "estimates" in locals() else {}, args)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def estimate(convert: Job) -> dict[str, dict]:
    """The plan's job rows for today's commands (reference rebuilt per job), made in the convert job's folders."""
    code = ("import json; from hubbot.config import load_config; from hubbot.build.plan import plan_project; "
            "print(json.dumps(plan_project(load_config('variants.yaml'), reference='rebuilt')['resources']['jobs']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=convert.work, env=convert.env, capture_output=True,
                          text=True, check=True)
    return {row["name"]: row for row in json.loads(proc.stdout)}


def report(jobs: list[Job], estimates: dict[str, dict], args) -> None:
    from hubbot.build.jobs import JobEstimate

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; threads {args.threads}; "
          f"max_shard_size {args.max_shard_size}; MB = 10^6 bytes")
    print(f"{'job':<20} {'disk est':>9} {'measured':>9} {'ratio':>6}  {'mem est':>8} {'RSS tree':>9} {'max proc':>9}"
          f" {'ratio':>6}  {'CPU est s':>9} {'CPU s':>7} {'wall est':>8} {'wall s':>7}")
    worst = 1.0
    for job in jobs:
        row = estimates.get(job.name)
        if row is None:
            print(f"{job.name:<20} (no estimate)")
            continue
        d_ratio = row["disk"] / max(1, job.peak_disk)
        m_ratio = row["memory"] / max(1, job.peak_rss)
        worst = max(worst, d_ratio, 1 / d_ratio)
        est = JobEstimate.from_json(row)
        cpu_est = row["cpu_seconds"] + row["serial_seconds"]
        print(f"{job.name:<20} {row['disk'] / 1e6:9.2f} {job.peak_disk / 1e6:9.2f} {d_ratio:6.2f}  "
              f"{row['memory'] / 1e6:8.0f} {job.peak_rss / 1e6:9.0f} {job.max_rss / 1e6:9.0f} {m_ratio:6.2f}  "
              f"{cpu_est:9.0f} {job.cpu:7.0f} {est.wall_seconds(args.threads):8.0f} {job.wall:7.0f}")
    print(f"disk: worst estimate/measurement {worst:.2f}x (acceptance: within 1.5x) -> "
          f"{'PASS' if worst <= 1.5 else 'FAIL'}")
    for job in jobs:
        print(f"  {job.name}: " + "; ".join(job.log))


if __name__ == "__main__":
    main()
