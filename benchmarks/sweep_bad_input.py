"""Every kind of bad input from issue 14, fed to the real command line: one table, and the totals.

Each case runs ``python -m hubbot ...`` in a fresh process (the way a user or a CI step runs it)
against a tiny synthetic model and a LocalHub on 127.0.0.1 started here, and records: the exit
code, the error line (the ``error:`` / click ``Error:`` line, else the first line of stderr),
whether a Python traceback appeared, whether a token appeared in stdout or stderr (every case
runs with a known secret in HF_TOKEN unless the case is about the token itself, and the token
cases also run with ``-v``), whether the case hung past its time limit, and its wall time.

A case is *clean* when it exits non-zero within its limit with one error line and no traceback
or token. The machine was shared with other work when the figures in docs/errors.md were taken;
the seconds are for spotting hangs, not for comparing speed.

    python benchmarks/sweep_bad_input.py [--only SUBSTRING] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hubbot.testing.localhub import LocalHub  # noqa: E402
from hubbot.testing.tinymodel import write_tiny_gguf  # noqa: E402

SECRET = "hf_SWEEPSECRET_write_0123456789abcdef"
READ_SECRET = "hf_SWEEPSECRET_read_fedcba9876543210"
USER = "sweeper"
CALIBRATION = ROOT / "examples" / "data" / "calibration.txt"


@dataclass
class Case:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the case folder first
    secrets: tuple[str, ...] = (SECRET,)  # what must never be shown
    timeout: float = 120.0
    cwd: str = "."  # relative to the case folder


@dataclass
class Outcome:
    case: Case
    code: int | None
    line: str
    traceback: bool
    leaked: bool
    seconds: float

    @property
    def hung(self) -> bool:
        return self.code is None

    @property
    def clean(self) -> bool:
        return not self.hung and self.code != 0 and not self.traceback and not self.leaked and self.line.lower().startswith(
            ("error:", "error: "))


def ladder(source: str = "MODEL", extra: str = "", variants: str | None = None,
           target: str = f"{USER}/tiny-GGUF", card: str = "  model_name: tiny\n") -> str:
    variants = variants if variants is not None else "  - name: q8_0\n    type: Q8_0\n  - name: q4_0\n    type: Q4_0\n"
    return (f"source:\n  path: {source}\ntarget:\n  repo: {target}\n  gated: false\n{extra}"
            f"card:\n{card}variants:\n{variants}")


def alias_bomb(levels: int = 8, width: int = 9, indent: str = "") -> str:
    lines = [f"{indent}a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HUB_SOURCE = ("source:\n  repo: org/tiny\n  file: tiny.gguf\ntarget:\n  repo: someone/tiny-GGUF\n"
              "card:\n  model_name: tiny\nvariants:\n  - name: q8_0\n    type: Q8_0\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cases(root: Path, endpoint: str, busy_port: int) -> list[Case]:
    closed = f"http://127.0.0.1:{free_port()}"
    hub = {"HF_ENDPOINT": endpoint}
    built = str(root / "built" / "variants.yaml")  # a project with both variants built
    c: list[Case] = []
    add = c.append
    v = "variants.yaml"
    # --- variants.yaml
    add(Case("alias bomb (top level)", ["plan", "-c", v], files={v: alias_bomb() + ladder()}))
    add(Case("alias bomb (under card.extra)", ["plan", "-c", v],
             files={v: ladder(card="  model_name: tiny\n  extra:\n" + alias_bomb(indent="    "))}))
    add(Case("malformed YAML", ["plan", "-c", v], files={v: ladder().replace("type: Q8_0", "type: [Q8_0")}))
    add(Case("duplicate key", ["plan", "-c", v], files={v: ladder() + "target:\n  repo: a/b\n"}))
    add(Case("misspelt key (tpye)", ["plan", "-c", v], files={v: ladder().replace("    type: Q4_0", "    tpye: Q4_0")}))
    add(Case("unknown top-level key", ["plan", "-c", v], files={v: "sources:\n  path: x\n" + ladder()}))
    add(Case("missing required key", ["plan", "-c", v], files={v: "variants:\n  - name: a\n    type: Q8_0\n"}))
    add(Case("unknown quant type", ["plan", "-c", v], files={v: ladder().replace("Q4_0", "Q4_KM")}))
    add(Case("unknown tensor type", ["plan", "-c", v], files={v: ladder(variants="  - name: a\n    type: Q8_0\n    output: Q8\n")}))
    add(Case("duplicate variant name", ["plan", "-c", v], files={v: ladder().replace("name: q4_0", "name: q8_0")}))
    add(Case("unknown recipe", ["plan", "-c", v], files={v: ladder(variants="  - name: a\n    recipe: dynamic-iq2_xx\n")}))
    add(Case("bad block selector", ["plan", "-c", v], files={v: ladder(
        variants="  - name: a\n    type: Q4_0\n    layers:\n      - blocks: first quarter\n        type: Q8_0\n")}))
    add(Case("bad tensor regex", ["plan", "-c", v], files={v: ladder(
        variants="  - name: a\n    type: Q4_0\n    tensors:\n      - pattern: 'attn_(q'\n        type: Q8_0\n")}))
    add(Case("IQ type without an imatrix source", ["plan", "-c", v], files={v: ladder().replace("Q4_0", "IQ2_XXS")}))
    add(Case("variant name with a folder", ["plan", "-c", v], files={v: ladder().replace("name: q4_0", "name: ../x")}))
    add(Case("file: with a folder", ["plan", "-c", v], files={v: ladder(
        variants="  - name: a\n    type: Q8_0\n    file: ../../evil.gguf\n")}))
    add(Case("card.model_name leaving out/", ["build", "-c", v], files={v: ladder(card="  model_name: ../escape\n")}))
    add(Case("target repo with invalid characters", ["plan", "-c", v], files={v: ladder(target="me/bad name!")}))
    add(Case("target repo not owner/name", ["plan", "-c", v], files={v: ladder(target="justaname")}))
    add(Case("max_shard_size unreadable", ["plan", "-c", v], files={v: ladder(extra="  max_shard_size: lots\n")}))
    add(Case("config file missing", ["plan", "-c", "nope.yaml"]))
    add(Case("config is a folder", ["plan", "-c", "."]))
    # --- the source and checks that need it
    add(Case("source file missing", ["plan", "-c", v], files={v: ladder(source="missing.gguf")}))
    add(Case("source not a GGUF", ["plan", "-c", v], files={v: ladder(source="junk.gguf"), "junk.gguf": b"GGUF\x03\0\0\0" + b"\xff" * 64}))
    add(Case("source is a folder without weights", ["plan", "-c", v], files={v: ladder(source="emptydir"), "emptydir/.keep": ""}))
    add(Case("block index past the last block", ["build", "-c", v], files={v: ladder(
        variants="  - name: a\n    type: Q4_0\n    layers:\n      - blocks: 2-9\n        type: Q8_0\n")}))
    add(Case("rule selecting no tensor", ["plan", "-c", v], files={v: ladder(
        variants="  - name: a\n    type: Q4_0\n    tensors:\n      - pattern: '^nothing$'\n        type: Q8_0\n")}))
    add(Case("max_shard_size below a tensor", ["build", "-c", v], files={v: ladder(extra="  max_shard_size: 100KB\n")}))
    add(Case("--only unknown variant", ["build", "-c", v, "--only", "q9"], files={v: ladder()}))
    add(Case("bench before build", ["bench", "-c", v], files={v: ladder(
        extra="") + f"benchmark:\n  text:\n    path: {CALIBRATION}\n"}))
    add(Case("--threads 0", ["build", "-c", v, "--threads", "0"], files={v: ladder()}))
    # --- texts and templates
    add(Case("calibration text missing", ["imatrix", "-c", v], files={v: ladder() + "imatrix:\n  calibration:\n    path: none.txt\n"}))
    add(Case("calibration text not UTF-8", ["imatrix", "-c", v], files={
        v: ladder() + "imatrix:\n  calibration:\n    path: bad.txt\n", "bad.txt": b"\xff\xfe\x00bad"}))
    add(Case("calibration text empty", ["imatrix", "-c", v], files={
        v: ladder() + "imatrix:\n  calibration:\n    path: empty.txt\n", "empty.txt": "  \n"}))
    add(Case("imatrix without an imatrix section", ["imatrix", "-c", v], files={v: ladder()}))
    # Pointed at the built project's work directory, so the card has rows to render.
    on_built = f"build:\n  workdir: {root / 'built' / '.hubbot'}\n"
    add(Case("card.template missing", ["card", "-c", v, "--dry-run"],
             files={v: ladder(card="  model_name: tiny\n  template: none.j2\n") + on_built}))
    add(Case("card template syntax error", ["card", "-c", v, "--dry-run"],
             files={v: ladder(card="  model_name: tiny\n  template: bad.md.j2\n") + on_built,
                    "bad.md.j2": "---\n{{ front_matter }}---\n{% if %}\n"}))
    add(Case("card template naming an unknown value", ["card", "-c", v, "--dry-run"],
             files={v: ladder(card="  model_name: tiny\n  template: bad.md.j2\n") + on_built,
                    "bad.md.j2": "---\n{{ front_matter }}---\n{{ no_such_value }}\n"}))
    add(Case("source.card missing", ["card", "-c", v, "--dry-run"], files={v: ladder().replace("source:\n", "source:\n  card: none.md\n")}))
    add(Case("card before build", ["card", "-c", v, "--dry-run"], files={v: ladder()}))
    # --- paths that cannot be written or read
    add(Case("workdir's out/ is a regular file", ["build", "-c", v], files={v: ladder(), ".hubbot/out": "x"}))
    add(Case("workdir under a regular file", ["build", "-c", v], files={v: ladder() + "build:\n  workdir: afile/work\n", "afile": "x"}))
    add(Case("card -o under a regular file", ["card", "-c", built, "--dry-run", "-o", "afile/card.md"],
             files={"afile": "x"}))
    add(Case("card -o is a folder", ["card", "-c", built, "--dry-run", "-o", "."]))
    add(Case("card --html under a regular file", ["card", "-c", built, "--dry-run", "-o", "c.md",
                                                  "--html", "afile/p.html"], files={"afile": "x"}))
    add(Case("ci export -o under a regular file", ["ci", "export", "-c", built, "--only", "q8_0", "-o",
                                                   "afile/results"], files={"afile": "x"}))
    add(Case("imatrix -o under a regular file", ["imatrix", "-c", v, "-o", "afile/m.gguf"], files={
        v: ladder() + f"imatrix:\n  calibration:\n    path: {CALIBRATION}\n", "afile": "x"}))
    add(Case("inspect a folder", ["inspect", "."]))
    add(Case("inspect a missing file", ["inspect", "missing.gguf"]))
    add(Case("inspect a text file", ["inspect", "notes.txt"], files={"notes.txt": "hello"}))
    add(Case("merge of a missing folder", ["merge", "-c", built, "nowhere"]))
    # --- the token (each with -v too: the transport's own log lines must not show it)
    for verbose in ([], ["-v"]):
        tag = " -v" if verbose else ""
        bad = "hf_SWEEPSECRET_bädtoken_4711"
        add(Case(f"HF_TOKEN not ASCII{tag}", [*verbose, "publish", "-c", built, "--dry-run",
                                             "--skip-bench"], env={**hub, "HF_TOKEN": bad}, secrets=(bad,)))
        crlf = "hf_SWEEPSECRET_first\r\nhf_SWEEPSECRET_second"
        add(Case(f"HF_TOKEN with CR/LF{tag}", [*verbose, "publish", "-c", built, "--dry-run",
                                              "--skip-bench"], env={**hub, "HF_TOKEN": crlf},
                 secrets=("hf_SWEEPSECRET_first", "hf_SWEEPSECRET_second")))
    add(Case("token file malformed", ["publish", "-c", built, "--dry-run", "--skip-bench"],
             env={**hub, "HF_TOKEN": "", "HF_HOME": "hfhome"}, files={"hfhome/token": "hf_SWEEPSECRET_fïle\n"},
             secrets=("hf_SWEEPSECRET_fïle",)))
    add(Case("no token, Hub wants one", ["publish", "-c", built, "--skip-bench"],
             env={**hub, "HF_TOKEN": ""}))
    add(Case("read-only token", ["publish", "-c", built, "--skip-bench"],
             env={**hub, "HF_TOKEN": READ_SECRET}, secrets=(READ_SECRET,)))
    add(Case("unknown token", ["publish", "-c", built, "--skip-bench"],
             env={**hub, "HF_TOKEN": "hf_SWEEPSECRET_unknown_00"}, secrets=("hf_SWEEPSECRET_unknown_00",)))
    # --- the endpoint
    add(Case("HF_ENDPOINT refuses (Hub source)", ["plan", "-c", v], env={"HF_ENDPOINT": closed}, files={v: HUB_SOURCE}))
    add(Case("HF_ENDPOINT refuses (publish)", ["publish", "-c", built, "--skip-bench"],
             env={"HF_ENDPOINT": closed}))
    add(Case("HF_ENDPOINT not a URL", ["plan", "-c", v], env={"HF_ENDPOINT": "localhost:8080"}, files={v: HUB_SOURCE}))
    add(Case("source repo missing on the Hub", ["plan", "-c", v], env=hub, files={v: HUB_SOURCE}))
    # --- publish flags and names
    add(Case("--create-pr with --revision", ["publish", "-c", built, "--create-pr", "--revision", "dev"], env=hub))
    add(Case("--create-pr with --tag", ["publish", "-c", built, "--create-pr", "--tag", "v1"], env=hub))
    add(Case("--revision ../main", ["publish", "-c", built, "--revision", "../main", "--dry-run"], env=hub))
    add(Case("--tag 'bad tag!'", ["publish", "-c", built, "--tag", "bad tag!", "--dry-run"], env=hub))
    add(Case("--card-only with nothing on the Hub", ["publish", "-c", built, "--card-only"], env=hub))
    add(Case("--no-card without --only", ["publish", "-c", built, "--no-card"], env=hub))
    add(Case("--card-only with --no-card", ["publish", "-c", built, "--card-only", "--no-card"], env=hub))
    # --- the local Hub server
    add(Case("serve-hub --tokens bad JSON", ["serve-hub", "--port", "0", "--tokens", "t.json"], files={"t.json": "{nope"}))
    add(Case("serve-hub --tokens a list", ["serve-hub", "--port", "0", "--tokens", "t.json"], files={"t.json": "[1, 2]"}))
    add(Case("serve-hub --tokens wrong entry", ["serve-hub", "--port", "0", "--tokens", "t.json"],
             files={"t.json": json.dumps({"hf_x": {"user": 3}})}))
    add(Case("serve-hub port in use", ["serve-hub", "--port", str(busy_port), "--storage", "store"]))
    return c


def run_case(case: Case, root: Path, base_env: dict[str, str]) -> Outcome:
    folder = root / "cases" / "".join(ch if ch.isalnum() else "-" for ch in case.name)
    folder.mkdir(parents=True)
    model = str(root / "model" / "tiny.gguf")
    for rel, content in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.replace("path: MODEL", f"path: {model}").encode()
        path.write_bytes(content)
    env = {**base_env, **case.env}
    if env.get("HF_HOME") and not Path(env["HF_HOME"]).is_absolute():
        env["HF_HOME"] = str(folder / env["HF_HOME"])
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "hubbot", *case.args], cwd=folder / case.cwd, env=env,
                              capture_output=True, text=True, timeout=case.timeout, check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
    seconds = time.monotonic() - start
    lines = [ln for ln in err.splitlines() if ln.strip()]
    line = next((ln for ln in lines if ln.lower().startswith("error:")), lines[0] if lines else "")
    leaked = any(s in out or s in err or s.encode("unicode_escape").decode() in err for s in case.secrets)
    return Outcome(case, code, line, "Traceback (most recent call last)" in err, leaked, seconds)


def prepare(root: Path, base_env: dict[str, str]) -> None:
    """The tiny model and one built project the card, export and publish cases point at."""
    (root / "cases").mkdir(parents=True)
    (root / "model").mkdir()
    write_tiny_gguf(root / "model" / "tiny.gguf")
    built = root / "built"
    built.mkdir()
    (built / "variants.yaml").write_text(ladder(source=str(root / "model" / "tiny.gguf")))
    subprocess.run([sys.executable, "-m", "hubbot", "build", "-c", "variants.yaml"], cwd=built, env=base_env,
                   check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hubbot-sweep-"))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    hub = LocalHub(root / "hub")
    hub.add_token(SECRET, USER, write=True)
    hub.add_token(READ_SECRET, USER, write=False)
    hub.start()
    base_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(root / "hf"), "HF_HUB_DISABLE_XET": "1",
                "HUBBOT_NO_PROGRESS": "1", "HF_TOKEN": SECRET}
    for key in ("HF_ENDPOINT", "HUBBOT_DEBUG"):
        base_env.pop(key, None)
    try:
        prepare(root, base_env)
        outcomes = []
        for case in cases(root, hub.endpoint, busy.getsockname()[1]):
            if args.only and args.only not in case.name:
                continue
            outcomes.append(run_case(case, root, base_env))
            o = outcomes[-1]
            print(f"... {case.name}: {o.code} ({o.seconds:.1f} s)", file=sys.stderr, flush=True)
    finally:
        hub.close()
        busy.close()
        shutil.rmtree(root, ignore_errors=True)
    report(outcomes, args.markdown)


def report(outcomes: list[Outcome], markdown: bool) -> None:
    def cell(text: str) -> str:
        text = text.replace("|", "\\|") if markdown else text
        return text if len(text) <= 150 else text[:147] + "..."

    if markdown:
        print("| case | exit | error line | traceback | token shown | s |")
        print("|---|---:|---|---|---|---:|")
    for o in outcomes:
        code = "hang" if o.hung else str(o.code)
        if markdown:
            print(f"| {o.case.name} | {code} | {cell(o.line)} | {'yes' if o.traceback else 'no'} | "
                  f"{'YES' if o.leaked else 'no'} | {o.seconds:.1f} |")
        else:
            flags = " ".join(f for f, on in (("TRACEBACK", o.traceback), ("TOKEN", o.leaked), ("HANG", o.hung)) if on)
            print(f"{o.case.name:<40} {code:>4}  {cell(o.line)}{'  [' + flags + ']' if flags else ''}")
    total = len(outcomes)
    print()
    print(f"cases: {total}; clean one-line errors: {sum(o.clean for o in outcomes)}; "
          f"tracebacks: {sum(o.traceback for o in outcomes)}; hangs: {sum(o.hung for o in outcomes)}; "
          f"token shown: {sum(o.leaked for o in outcomes)}; exit 0: {sum(o.code == 0 for o in outcomes)}; "
          f"longest: {max((o.seconds for o in outcomes), default=0):.1f} s")


if __name__ == "__main__":
    main()
