"""The card's records file, ``hubbot-results.json``: what each file on the card is and how it measured.

Publish writes it next to README.md and pushes it in the card's commit, so the repo carries the
machine-readable form of its card. ``hubbot card --preview`` reads it back (no token needed for
a public repo) to show the published figures of files a change leaves as they are.

Format, version 1 (keys sorted, so equal records are equal bytes and an unchanged publish
commits nothing)::

    {"format": "hubbot-results", "version": 1, "hubbot": "<version that wrote it>",
     "repo": "owner/name",
     "variants": {"<whole file name>": {"entry": {...}, "result": {...} | null}},
     "imatrix": {"<file name>": {...}}}

``entry`` is the variant's manifest entry as the build recorded it (sha256, size, input key,
recipe, engine, source, imatrix use, shards) with ``file_facts`` (output and embedding types,
tensor-type counts, read from the file) and without what only describes one machine's copy
(mtime, build seconds, peak memory). ``result`` is the bench result stored for that file.
Readers ignore keys they do not know; a version above theirs is refused with a hint to upgrade.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hubbot import __version__
from hubbot.card.inputs import CardInput
from hubbot.errors import CardError

RECORDS_NAME = "hubbot-results.json"
FORMAT = "hubbot-results"
VERSION = 1
# What describes one machine's copy or run of a file, not the file.
_LOCAL_KEYS = ("mtime_ns", "seconds", "peak_rss")


def _portable(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in _LOCAL_KEYS}
    shards = out.get("shards")
    if isinstance(shards, dict) and isinstance(shards.get("files"), list):
        out["shards"] = dict(shards, files=[{k: v for k, v in s.items() if k not in _LOCAL_KEYS}
                                            for s in shards["files"]])
    return out


def card_records(data: CardInput, manifest: dict[str, dict], results: dict[str, dict]) -> dict[str, Any]:
    """The records of the files on a card rendered from ``data`` (manifest entries and bench results by file)."""
    variants = {}
    for r in data.rows:
        entry = _portable(manifest.get(r.whole_file) or {})
        entry["file_facts"] = {"output": r.output, "embeddings": r.embeddings, "tied": r.tied,
                               "tensor_types": {t.type: t.count for t in r.tensor_types}}
        variants[r.whole_file] = {"entry": entry, "result": results.get(r.whole_file)}
    imatrix = {}
    if data.imatrix is not None and data.imatrix.name in manifest:
        imatrix[data.imatrix.name] = _portable(manifest[data.imatrix.name])
    return {"format": FORMAT, "version": VERSION, "hubbot": __version__, "repo": data.settings.repo,
            "variants": variants, "imatrix": imatrix}


def dump_records(records: dict[str, Any]) -> str:
    return json.dumps(records, indent=1, sort_keys=True, default=str) + "\n"


@dataclass
class PublishedRecords:
    """The records file of a published card, read back."""

    origin: str
    hubbot: str | None = None
    variants: dict[str, dict] = field(default_factory=dict)  # file -> {"entry", "result"}
    imatrix: dict[str, dict] = field(default_factory=dict)

    def entry(self, file: str) -> dict | None:
        rec = self.variants.get(file)
        return rec.get("entry") if isinstance(rec, dict) and isinstance(rec.get("entry"), dict) else None

    def result(self, file: str) -> dict | None:
        rec = self.variants.get(file)
        return rec.get("result") if isinstance(rec, dict) and isinstance(rec.get("result"), dict) else None


def parse_records(text: str, origin: str) -> PublishedRecords:
    """Read a records file; CardError (one line) when it is not one this hubbot can read."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CardError(f"{origin} is not valid JSON ({exc}); publish again to rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("version"), int):
        raise CardError(f"{origin} is not a hubbot results file (no format {FORMAT!r} with a version); "
                        "publish again to rewrite it")
    if data["version"] > VERSION:
        raise CardError(f"{origin} was written by a newer hubbot ({data.get('hubbot')}, format version "
                        f"{data['version']}); upgrade hubbot to preview against it")
    variants = data.get("variants") if isinstance(data.get("variants"), dict) else {}
    imatrix = data.get("imatrix") if isinstance(data.get("imatrix"), dict) else {}
    return PublishedRecords(origin=origin, hubbot=data.get("hubbot"), variants=variants, imatrix=imatrix)
