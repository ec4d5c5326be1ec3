"""Publish a Gemma 3 270M ladder to the local Hub: upload throughput, and the cost of an unchanged publish.

Builds the ladder first (not timed), then against a LocalHub on 127.0.0.1 with the real
huggingface_hub client (LFS, Xet off):

* first publish: wall time and upload throughput (MB/s of GGUF bytes the server received);
* unchanged publish, push only (diff + card, no build step) and the whole ``publish_project``
  (build's up-to-date check, card, diff): wall time, requests, bytes the server received, bytes
  this process read (``/proc/self/io`` rchar, which includes HTTP answers) and how many times the
  push code opened a GGUF of the ladder (must be 0: unchanged files are recognised by the
  manifest's sha256 against the remote LFS sha256, never by reading them).

    python benchmarks/bench_publish.py [--reps 3] [--variants q8_0,q4_0,q4_k_m]
"""

from __future__ import annotations

import argparse
import builtins
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HUBBOT_NO_PROGRESS", "1")

from hubbot.build.run import build
from hubbot.card.render import write_card
from hubbot.config import load_config
from hubbot.hub.local import card_files, ladder_files
from hubbot.hub.push import PushOptions, PushTarget, push
from hubbot.pipeline import publish_project
from hubbot.testing.localhub import LocalHub
from hubbot.workdir import WorkDir

PUSH_MODULES = ("hubbot.hub", "hubbot.pipeline", "hubbot.workdir", "hubbot.gguf_io.shard", "huggingface_hub")


def rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar"))


class OpenSpy:
    """Counts opens of ``folder``'s GGUF files made by the push code while active."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count, self._real = str(folder), 0, builtins.open

    def __enter__(self) -> OpenSpy:
        def spy(file, *a, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if str(file).startswith(self.folder) and str(file).endswith(".gguf") and caller.startswith(PUSH_MODULES):
                self.count += 1
            return self._real(file, *a, **k)

        builtins.open = spy
        return self

    def __exit__(self, *exc) -> None:
        builtins.open = self._real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="q8_0,q4_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from support.fixtures import _expanded_source

    tmp = Path(tempfile.mkdtemp(prefix="hubbot-bench-publish-"))
    src = _expanded_source("bf16")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    variants = "".join(f"  - name: {n}\n    type: {n.upper()}\n" for n in names)
    cfg_path = tmp / "variants.yaml"
    cfg_path.write_text(f"source:\n  path: {src}\n  base_model: google/gemma-3-270m\ntarget:\n  repo: bench/gemma-3-270m-GGUF\n"
                        f"  gated: false\nbuild:\n  threads: {args.threads}\ncard:\n  model_name: gemma-3-270m\n"
                        f"variants:\n{variants}")
    cfg = load_config(cfg_path)
    build(cfg)
    work = WorkDir(cfg.workdir)
    files = ladder_files(cfg, work)
    target = PushTarget.from_config(cfg)

    def make_card(names: list[str]) -> list:
        return card_files(write_card(cfg, files=names), work.out)
    total = sum(f.size for f in files)

    from huggingface_hub import __version__ as hf_version

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, huggingface_hub {hf_version}, server: hubbot LocalHub on 127.0.0.1")
    print(f"ladder: {len(files)} files, {total / 1e6:.0f} MB ({', '.join(f.name for f in files)})")

    with LocalHub(tmp / "hub") as hub:
        t0 = time.perf_counter()
        options = PushOptions(endpoint=hub.endpoint)
        first = push(target, files, make_card, options)
        dt = time.perf_counter() - t0
        print(f"first publish: {dt:.2f} s, {first.bytes_sent / 1e6:.0f} MB sent, "
              f"{hub.bytes_received / 1e6 / dt:.1f} MB/s end to end (server received {hub.bytes_received / 1e6:.0f} MB)")

        for label, fn in (
            ("unchanged push only", lambda: push(target, ladder_files(cfg, work), make_card, options)),
            ("unchanged publish_project", lambda: publish_project(cfg, skip_bench=True, options=options)),
        ):
            times, reads, opens = [], [], 0
            before_recv, before_req = hub.bytes_received, sum(hub.requests.values())
            for _ in range(args.reps):
                r0, t0 = rchar(), time.perf_counter()
                with OpenSpy(work.out) as spy:
                    s = fn()
                times.append(time.perf_counter() - t0)
                reads.append(rchar() - r0)
                opens += spy.count
                assert s.commits == [] and s.bytes_sent == 0, s
            reqs = (sum(hub.requests.values()) - before_req) / args.reps
            print(f"{label}: median {statistics.median(times):.2f} s over {args.reps} runs, {reqs:.0f} requests, "
                  f"server received {hub.bytes_received - before_recv} B, process read "
                  f"{statistics.median(reads) / 1e6:.2f} MB (of {total / 1e6:.0f} MB of GGUF), "
                  f"GGUF opens by the push code: {opens}")


if __name__ == "__main__":
    main()
