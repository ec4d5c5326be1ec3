"""The facts a model card is rendered from: files, variants, measurements, provenance.

Everything here is plain data (dicts and lists of numbers and strings) so that the Jinja
templates decide all wording and formatting. Keys are always present (``None`` when a fact is
unknown) because the templates render with StrictUndefined.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hubbot import __version__
from hubbot.config import Config, VariantConfig
from hubbot.config.recipes import FILE_TYPES, FLOAT_TYPES, TENSOR_TYPES
from hubbot.gguf_io.info import SHARD_RE, open_reader
from hubbot.workdir import WorkDir

log = logging.getLogger(__name__)

CHART_NAME = "ppl-vs-size.svg"
LLAMA_CPP_COMMIT_URL = "https://github.com/ggml-org/llama.cpp/commit/{}"
HUB_URL = "https://huggingface.co/{}"

# Quant labels the Hub and llama.cpp recognise in file names (longest first so Q4_K_M beats Q4_K).
_LABELS = sorted({*FILE_TYPES, *TENSOR_TYPES}, key=len, reverse=True)


def quant_labels(file_name: str) -> list[str]:
    """The quant labels in a file name, e.g. ['BF16', 'Q8_0'] for 'x-bf16-q8_0.gguf'."""
    stem = file_name.removesuffix(".gguf").upper()
    found = []
    for part in re.split(r"[-.]", stem):
        if part in _LABELS and part not in found:
            found.append(part)
    return found


def _describe_blocks(spec: str) -> str:
    """A block selector in words ('edges 12.5%' -> 'the first and last 12.5% of blocks')."""
    s = " ".join(spec.lower().split())
    if s == "all":
        return "every block"
    for prefix, words in (("edges ", "the first and last {} of blocks"), ("first and last ", "the first and last {} of blocks"),
                          ("first ", "the first {} of blocks"), ("last ", "the last {} of blocks"),
                          ("middle ", "the middle {} of blocks")):
        if s.startswith(prefix):
            return words.format(s[len(prefix):])
    if "%" in s:
        return f"blocks from {s.replace('-', ' to ')} of the depth"
    return f"blocks {s}"


def _file_facts(path: Path) -> dict | None:
    """Output/embedding types, tying and tensor-type counts read from a GGUF header; None when unreadable.

    The file is the truth: the build report can disagree with it (e.g. for tensors whose type
    an override changed), and the card describes what users download.
    """
    with contextlib.suppress(Exception):
        reader = open_reader(path)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        counts: dict[str, int] = {}
        for name in types.values():
            counts[name] = counts.get(name, 0) + 1
        emb = types.get("token_embd.weight")
        out = types.get("output.weight")
        return {"output": out or emb, "embeddings": emb, "tied": out is None and emb is not None,
                "tensor_types": counts}
    return None


def _variant_files(entry: dict, files: set[str] | None, fname: str) -> list[dict] | None:
    """The published files of one variant: the whole file, its shards, or None when not published."""
    shards = [dict(s) for s in ((entry.get("shards") or {}).get("files") or [])]
    if files is None:
        return [{"name": fname, "size": entry.get("size"), "sha256": entry.get("sha256")}]
    if fname in files:
        return [{"name": fname, "size": entry.get("size"), "sha256": entry.get("sha256")}]
    named = [n for n in files if (m := SHARD_RE.match(n)) and m.group("stem") == fname.removesuffix(".gguf")]
    if not named:
        return None
    by_name = {s["file"]: s for s in shards}
    return [{"name": n, "size": (by_name.get(n) or {}).get("size"), "sha256": (by_name.get(n) or {}).get("sha256")}
            for n in sorted(named)]


def _result_row(result: dict | None, reference_file: str | None, fname: str) -> dict | None:
    if not result or not result.get("perplexity"):
        return None
    ppl, kld, spd = result["perplexity"], result.get("kld") or {}, result.get("speed") or {}
    return {
        "ppl": ppl.get("ppl"), "ppl_stderr": ppl.get("stderr"),
        "kld_mean": kld.get("mean"), "kld_p99": kld.get("p99"), "same_top": kld.get("same_top"),
        "pp": spd.get("pp"), "tg": spd.get("tg"),
        "is_reference": reference_file == fname,
        "d_ppl": None,
    }


def reference_file(results: dict[str, dict]) -> str | None:
    for r in results.values():
        q = (r.get("settings") or {}).get("quality") or {}
        if q.get("reference_file"):
            return q["reference_file"]
    return None


def bench_settings(results: dict[str, dict], reference_file: str | None) -> dict | None:
    measured = [r for r in results.values() if r.get("perplexity")]
    if not measured:
        return None
    first = measured[0]
    ppl = first["perplexity"]
    speed = next((r["speed"] for r in measured if r.get("speed")), None)
    return {
        "text": (first.get("text") or {}).get("name"),
        "ctx": ppl.get("ctx"), "chunks": ppl.get("chunks"), "tokens": ppl.get("tokens"),
        # The reference by variant name: its whole file may be published only as shards, or not at all.
        "reference": ((first.get("settings") or {}).get("quality") or {}).get("reference")
        or (first.get("kld") or {}).get("reference") or reference_file,
        "threads": speed.get("threads") if speed else None,
        "pp_tokens": speed.get("pp_tokens") if speed else None,
        "tg_tokens": speed.get("tg_tokens") if speed else None,
    }


def _engines(entries: Iterable[dict]) -> list[dict]:
    seen: dict[tuple, dict] = {}
    for e in entries:
        eng = e.get("engine") or {}
        key = (eng.get("ggml_commit"), eng.get("llama_cpp_python"))
        if key not in seen and any(key):
            commit = eng.get("ggml_commit")
            clean = commit.split("-")[0] if commit else None
            seen[key] = {"commit": commit, "commit_url": LLAMA_CPP_COMMIT_URL.format(clean) if clean else None,
                         "llama_cpp_python": eng.get("llama_cpp_python"), "ggml_version": eng.get("ggml_version")}
    return list(seen.values())


def _layer_rules(v: VariantConfig) -> list[dict]:
    return [{"blocks": r.blocks, "blocks_text": _describe_blocks(r.blocks), "roles": list(r.roles), "type": r.type}
            for r in v.layers]


def _fallbacks(raw: Any) -> list[dict]:
    """Shape fallbacks grouped by change ('Q4_K->Q5_0': count), most frequent first."""
    counts: dict[str, int] = {}
    for change in (raw.values() if isinstance(raw, dict) else raw or []):
        counts[str(change)] = counts.get(str(change), 0) + 1
    return [{"change": k.replace("->", " → "), "count": n} for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _tensor_types(raw: Any) -> list[dict]:
    """Tensor counts per type, most frequent first."""
    items = (raw or {}).items() if isinstance(raw, dict) else []
    return [{"type": k, "count": n} for k, n in sorted(items, key=lambda kv: (-kv[1], kv[0]))]


def collect_rows(cfg: Config, manifest: dict[str, dict], results: dict[str, dict],
                 files: Iterable[str] | None, work: WorkDir) -> list[dict]:
    """One row per published variant, in ladder order, with its files and measurements."""
    wanted = None if files is None else set(files)
    ref_file = reference_file(results)
    rows = []
    for v in cfg.variants:
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        if not entry or entry.get("kind", "variant") != "variant":
            continue
        published = _variant_files(entry, wanted, fname)
        if published is None:
            continue
        # A job matrix's card job has the files' records (`hubbot ci export` adds "file_facts"), not the files.
        facts = _file_facts(work.out / fname) if (work.out / fname).is_file() else entry.get("file_facts")
        rows.append({
            "name": v.name, "file": published[0]["name"], "whole_file": fname, "files": published,
            "type": entry.get("type") or v.type,
            "size": entry.get("size"), "bpw": entry.get("bpw"), "n_params": entry.get("n_params"),
            "sha256": entry.get("sha256"),
            "output": facts["output"] if facts else entry.get("output"),
            "embeddings": facts["embeddings"] if facts else entry.get("embeddings"),
            "tied": bool(facts and facts["tied"]),
            "imatrix": bool(entry.get("imatrix")),
            "description": entry.get("description") or v.description,
            "adaptive": bool(v.layers), "layers": _layer_rules(v), "recipe": v.recipe,
            "auto": auto_summary(entry.get("auto")),
            "fallbacks": _fallbacks(entry.get("fallbacks")),
            "tensor_types": _tensor_types(facts["tensor_types"] if facts else entry.get("tensor_types")),
            "is_float": (entry.get("type") or v.type) in FLOAT_TYPES,
            "labels": quant_labels(fname),
            "tag": None,
            "result": _result_row(results.get(fname), ref_file, fname),
        })
    _assign_tags(rows)
    ref = next((r for r in rows if r["result"] and r["result"]["is_reference"]), None)
    if ref is not None:
        base = ref["result"]["ppl"]
        for r in rows:
            if r["result"] and base:
                r["result"]["d_ppl"] = (r["result"]["ppl"] - base) / base
    return rows


def _assign_tags(rows: list[dict]) -> None:
    """The ``repo:TAG`` each file answers to: its one quant label, when no other file shares it."""
    counts: dict[str, int] = {}
    for r in rows:
        for label in r["labels"]:
            counts[label] = counts.get(label, 0) + 1
    for r in rows:
        if len(r["labels"]) == 1 and counts[r["labels"][0]] == 1:
            r["tag"] = r["labels"][0]


def adaptive_pairs(rows: list[dict]) -> list[dict]:
    """Each measured adaptive variant with the measured standard variant of the same base type."""
    pairs = []
    for a in rows:
        if not a["adaptive"] or not a["result"]:
            continue
        std = next((s for s in rows if not s["adaptive"] and not s["auto"] and s["type"] == a["type"] and s["result"]), None)
        if std is None:
            continue
        ra, rs = a["result"], std["result"]
        pairs.append({
            "adaptive": a, "standard": std,
            "d_ppl": (ra["ppl"] - rs["ppl"]) / rs["ppl"] if rs["ppl"] else None,
            "d_size": (a["size"] or 0) - (std["size"] or 0),
            "d_size_rel": ((a["size"] or 0) - (std["size"] or 0)) / std["size"] if std["size"] else None,
            "has_speed": ra["tg"] is not None and rs["tg"] is not None,
        })
    return pairs


def _runs(blocks: list[int]) -> str:
    """'0-3, 16, 17' style text for a sorted list of block indices."""
    parts, start = [], None
    for i, b in enumerate(blocks):
        if start is None:
            start = b
        if i + 1 == len(blocks) or blocks[i + 1] != b + 1:
            parts.append(str(start) if start == b else f"{start}-{b}")
            start = None
    return ", ".join(parts)


def auto_summary(auto: dict | None) -> dict | None:
    """A recipe: auto file's budget and its changes against the standard mix, grouped for a table."""
    if not auto:
        return None
    changes = []
    for role in auto.get("changes") or []:
        for kind in ("raised", "lowered"):
            groups: dict[tuple[str, str], list] = {}
            for c in role[kind]:
                groups.setdefault((c["from"], c["to"]), []).append(c["block"])
            for (old, new), blocks in sorted(groups.items()):
                where = "" if blocks == [None] else _runs(sorted(b for b in blocks if b is not None))
                changes.append({"role": role["role"], "kind": kind, "from": old, "to": new, "blocks": where})
    return {**auto, "change_rows": changes}


def auto_comparisons(rows: list[dict]) -> list[dict]:
    """Each measured auto file with the measured standard and layer-recipe files of its type."""
    out = []
    for a in rows:
        if not a["auto"]:
            continue
        std = next((s for s in rows if not s["adaptive"] and not s["auto"] and s["type"] == a["type"] and s["result"]), None)
        dyn = next((s for s in rows if s["adaptive"] and s["type"] == a["type"] and s["result"]), None)
        out.append({"auto": a, "standard": std, "adaptive": dyn})
    return out


def formats_present(rows: list[dict]) -> list[dict]:
    """The distinct file types of the card's variants, in ladder order, with the variants of each."""
    out: dict[str, dict] = {}
    for r in rows:
        f = out.setdefault(r["type"], {"type": r["type"], "variants": [], "bpw_min": None, "bpw_max": None,
                                       "has_adaptive": False})
        f["variants"].append(r["name"])
        f["has_adaptive"] = f["has_adaptive"] or r["adaptive"]
        if r["bpw"] is not None:
            f["bpw_min"] = r["bpw"] if f["bpw_min"] is None else min(f["bpw_min"], r["bpw"])
            f["bpw_max"] = r["bpw"] if f["bpw_max"] is None else max(f["bpw_max"], r["bpw"])
    return list(out.values())


def imatrix_file(manifest: dict[str, dict], files: Iterable[str] | None) -> dict | None:
    wanted = None if files is None else set(files)
    for name, e in manifest.items():
        if e.get("kind") == "imatrix" and (wanted is None or name in wanted):
            return {"name": name, "size": e.get("size"), "sha256": e.get("sha256"),
                    "dataset": e.get("dataset") or e.get("calibration"), "chunks": e.get("chunks"),
                    "ctx": e.get("ctx"), "entries": e.get("entries")}
    return None


def generation(cfg: Config, rows: list[dict], manifest: dict[str, dict], imatrix: dict | None) -> dict:
    entries = [manifest[r["whole_file"]] for r in rows]
    src = next((e.get("source") for e in entries if e.get("source")), None) or {}
    used = next((e["imatrix"] for e in entries if e.get("imatrix")), None)
    dataset = (used or {}).get("dataset") or (imatrix or {}).get("dataset")
    chunks = (used or {}).get("chunks") or (imatrix or {}).get("chunks")
    return {
        "engines": _engines(entries), "hubbot_version": __version__,
        "source_repo": src.get("repo") or cfg.source.upstream_repo,
        "source_revision": src.get("revision"), "source_origin": src.get("origin"),
        "source_sha256": src.get("sha256"),
        "imatrix": {"dataset": dataset, "chunks": chunks,
                    "ctx": (imatrix or {}).get("ctx")} if (used or imatrix) else None,
    }
