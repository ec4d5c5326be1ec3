"""Runner classes, which one a job fits, and the check a job runs on its machine before downloading.

GitHub's standard Linux runner and its larger runners (Team/Enterprise plans, configured per
organization with their own labels) come in fixed sizes; a job fits a class when its peak disk and
peak memory, plus a 10% margin, fit the class and its estimated time fits the 6-hour limit of
hosted jobs. Nothing fits: a self-hosted machine (no time limit), sized by the job's figures.

``check_machine`` is the guard each job runs first (``hubbot plan --check-job NAME``): it compares
the job's needs with the free space of the folders it writes and the memory of this machine, and
fails with one line that says what is missing and where to run the job instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hubbot.build.jobs import JobEstimate
from hubbot.errors import HubbotError
from hubbot.workdir import human_bytes

MARGIN = 1.10  # needs are estimates: keep 10% in hand
HOSTED_JOB_HOURS = 6.0


class RunnerTooSmallError(HubbotError):
    """This machine lacks the disk or memory a release job needs."""

    exit_code = 3


@dataclass(frozen=True)
class RunnerClass:
    name: str
    cores: int
    memory: int
    disk: int
    hosted: bool = True
    note: str = ""

    def fits(self, job: JobEstimate) -> bool:
        if job.peak_disk * MARGIN > self.disk or job.peak_memory * MARGIN > self.memory:
            return False
        return not self.hosted or job.wall_seconds(self.cores) <= HOSTED_JOB_HOURS * 3600

    def describe(self) -> str:
        return f"{self.cores} cores/{human_bytes(self.memory)} RAM/{human_bytes(self.disk)} disk"


# GitHub-hosted Linux sizes: the standard runner's 14 GB is its free disk; larger runners' SSDs.
RUNNER_CLASSES = (
    RunnerClass("standard", 4, 16 * 10**9, 14 * 10**9, note="ubuntu-latest"),
    RunnerClass("larger-16", 16, 64 * 10**9, 600 * 10**9, note="larger runner, 16 cores"),
    RunnerClass("larger-32", 32, 128 * 10**9, 1200 * 10**9, note="larger runner, 32 cores"),
    RunnerClass("larger-64", 64, 256 * 10**9, 2040 * 10**9, note="larger runner, 64 cores"),
)


def smallest_fit(job: JobEstimate) -> RunnerClass | None:
    """The smallest hosted class the job fits, or None (then only a self-hosted machine will do)."""
    return next((r for r in RUNNER_CLASSES if r.fits(job)), None)


def runner_advice(job: JobEstimate) -> str:
    fit = smallest_fit(job)
    if fit is not None:
        return f"a {fit.name} runner ({fit.describe()}) or larger"
    return (f"a self-hosted machine with at least {human_bytes(job.peak_disk * MARGIN)} free disk and "
            f"{human_bytes(job.peak_memory * MARGIN)} RAM (no hosted class fits)")


def available_memory() -> int:
    """Memory this machine can give a job now: MemAvailable (Linux), else the physical total."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _existing(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_machine(job: JobEstimate, places: dict[str, Path], memory: int | None = None) -> dict:
    """RunnerTooSmallError unless this machine holds ``job``: disk per file system, memory in total.

    ``places`` maps the disk items' ``where`` (workdir, hf-cache, home, temp) to folders; items on
    the same file system add up. Returns what was compared (for ``--json``).
    """
    needs: dict[int, dict] = {}
    for item in job.disk:
        folder = _existing(places.get(item.where) or places.get("workdir") or Path(tempfile.gettempdir()))
        dev = folder.stat().st_dev
        slot = needs.setdefault(dev, {"folders": [], "need": 0, "free": shutil.disk_usage(folder).free})
        if str(folder) not in slot["folders"]:
            slot["folders"].append(str(folder))
        slot["need"] += item.bytes
    memory = available_memory() if memory is None else memory
    short = []
    for slot in needs.values():
        if slot["need"] > slot["free"]:
            short.append(f"{human_bytes(slot['need'])} of disk under {' and '.join(slot['folders'])} "
                         f"({human_bytes(slot['free'])} free)")
    disk_short = bool(short)
    if job.peak_memory > memory:
        short.append(f"{human_bytes(job.peak_memory)} of memory ({human_bytes(memory)} available)")
    result = {"job": job.name, "disk": list(needs.values()), "memory": {"need": job.peak_memory, "available": memory},
              "ok": not short}
    if short:
        alternative = "; or free space, or point build.workdir and HF_HOME at a bigger disk" if disk_short else ""
        raise RunnerTooSmallError(f"job {job.name} needs {' and '.join(short)}: run it on {runner_advice(job)} "
                                  f"(its runs-on label, see docs/runners.md){alternative}")
    return result
