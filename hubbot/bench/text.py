"""The evaluation text: loading it (local file or Hub dataset file) and checking it against the calibration text.

Perplexity measured on the text the importance matrix was computed from flatters the imatrix
builds, so hubbot warns when the two overlap: identical files, or shared 200-character passages.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from hubbot.config import Config, TextFile
from hubbot.errors import BenchError

log = logging.getLogger(__name__)

SHINGLE = 200  # characters in a compared passage
_STRIDE = 50  # calibration passages are sampled every 50 characters: any shared run of 250+ is found


@dataclass(frozen=True)
class EvalText:
    name: str
    path: Path
    data: bytes  # exactly what is tokenized (one trailing newline removed, as llama.cpp's -f does)
    sha256: str  # of the file as stored

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}


def text_path(cfg: Config, tf: TextFile, what: str) -> Path:
    """Local path of a configured text, downloading it from the Hub when it lives there."""
    if tf.path:
        path = cfg.resolve_path(tf.path)
        if not path.is_file():
            raise BenchError(f"{what} {path} not found; check the path in {cfg.path.name}")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=tf.repo, filename=tf.file, revision=tf.revision,
                                    repo_type=tf.repo_type, endpoint=cfg.target.endpoint))
    except Exception as exc:  # the client raises many kinds; all mean "could not fetch"
        raise BenchError(f"could not download {what} {tf.repo}/{tf.file}: {type(exc).__name__}: {exc}") from None


def load_eval_text(cfg: Config) -> EvalText:
    """The configured benchmark text, checked for overlap with the calibration text."""
    tf = cfg.benchmark.text
    if tf is None:
        raise BenchError(f"{cfg.path.name} has no benchmark.text; add benchmark: {{text: {{path: evaluation.txt}}}}")
    path = text_path(cfg, tf, "evaluation text")
    raw = path.read_bytes()
    text = EvalText(tf.display_name, path, raw.removesuffix(b"\n"), hashlib.sha256(raw).hexdigest())
    check_overlap(cfg, text)
    return text


def shared_fraction(evaluation: str, calibration: str) -> float:
    """Fraction of the evaluation text's 200-char passages that also occur in the calibration text."""
    ev, cal = " ".join(evaluation.split()), " ".join(calibration.split())
    if len(ev) < SHINGLE or len(cal) < SHINGLE:
        return 1.0 if ev and ev in cal else 0.0
    seen = {hash(cal[i:i + SHINGLE]) for i in range(0, len(cal) - SHINGLE + 1, _STRIDE)}
    n = len(ev) - SHINGLE + 1
    hits = sum(1 for i in range(n) if hash(ev[i:i + SHINGLE]) in seen)
    # A hit marks a shared run of at least 200 + stride characters; count the passages it covers.
    return min(1.0, hits * _STRIDE / n) if hits else 0.0


def check_overlap(cfg: Config, text: EvalText) -> None:
    """logging.warning when the evaluation text overlaps imatrix.calibration."""
    cal = cfg.imatrix.calibration
    if cal is None:
        return
    try:
        cal_path = text_path(cfg, cal, "calibration text")
    except BenchError as exc:
        log.debug("overlap check skipped: %s", exc)
        return
    cal_raw = cal_path.read_bytes()
    if hashlib.sha256(cal_raw).hexdigest() == text.sha256:
        log.warning("warning: the evaluation text %s is the calibration text; perplexity and KLD of imatrix "
                    "builds will look better than they are: use a different benchmark.text", text.name)
        return
    frac = shared_fraction(text.data.decode("utf-8", "replace"), cal_raw.decode("utf-8", "replace"))
    if frac > 0:
        log.warning("warning: the evaluation text %s shares passages with the calibration text %s "
                    "(about %.0f%% of it); remove them so imatrix builds are not flattered",
                    text.name, cal.display_name, 100 * frac)
