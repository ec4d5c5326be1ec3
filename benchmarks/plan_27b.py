"""The root ladder (MedGemma 27B) planned on its shape-exact stand-in: the tables docs/runners.md quotes.

Writes the sparse stand-in (hubbot.testing.standin: the real Gemma 3 27B tensor inventory, 6.5 MB
of disk), points a copy of the root variants.yaml at it and runs ``hubbot plan`` (text and
``--json``). Prints the per-job sizing table as Markdown, then the plan as ``hubbot plan`` prints
it, and how long the plan took. The stand-in is a local file, so its convert job has no download
or conversion: the runner-sizing page adds those for the real safetensors source.

    python benchmarks/plan_27b.py [--folder /tmp/hubbot-27b] [--tokenizer-from GEMMA3.gguf]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hubbot.build.resource_plan import WALL_CORES, format_hours  # noqa: E402
from hubbot.testing.standin import write_standin  # noqa: E402
from hubbot.workdir import human_bytes  # noqa: E402


def root_config(folder: Path, standin: Path) -> Path:
    text = (ROOT / "variants.yaml").read_text()
    text = re.sub(r"(?m)^  repo: google/medgemma-27b-text-it.*$", f"  path: {standin}\n  base_model: google/medgemma-27b-text-it", text)
    text = re.sub(r"(?m)^  (revision|dtype): .*\n", "", text)
    text = text.replace("path: examples/data", f"path: {ROOT}/examples/data")
    path = folder / "variants.yaml"
    path.write_text(text + f"build:\n  workdir: {folder / 'work'}\n")
    return path


def plan(config: Path, *extra: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HUBBOT_NO_PROGRESS="1")
    return subprocess.run([sys.executable, "-m", "hubbot", "plan", "-c", str(config), *extra], env=env,
                          capture_output=True, text=True, check=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/hubbot-27b"))
    ap.add_argument("--tokenizer-from", type=Path, default=None, help="copy the vocabulary from this Gemma 3 GGUF")
    args = ap.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    standin = args.folder / "medgemma-27b-bf16.gguf"
    if not standin.is_file():
        write_standin(standin, tokenizer_from=args.tokenizer_from)
    config = root_config(args.folder, standin)
    start = time.perf_counter()
    data = json.loads(plan(config, "--json"))
    seconds = time.perf_counter() - start
    print("| job | disk | memory | CPU h | " + " | ".join(f"{c} cores" for c in WALL_CORES) + " | 1 GPU | smallest runner |")
    print("|---|---:|---:|---:|" + "---:|" * len(WALL_CORES) + "---:|---|")
    for j in data["resources"]["jobs"]:
        walls = " | ".join(format_hours(j["wall_seconds"][f"{c}c"]) for c in WALL_CORES)
        print(f"| `{j['name']}` | {human_bytes(j['disk'])} | {human_bytes(j['memory'])} | {j['cpu_seconds'] / 3600:.1f} | "
              f"{walls} | {format_hours(j['gpu_wall_seconds'])} | {j['runner']} |")
    print(f"\nplan --json of {len(data['variants'])} variants: {seconds:.1f} s\n")
    print(plan(config))


if __name__ == "__main__":
    main()
