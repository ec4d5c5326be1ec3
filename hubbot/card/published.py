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
from dataclasses import dataclass, field, replace
from typing import Any

from hubbot import __version__
from hubbot.card.inputs import CardInput
from hubbot.errors import CardError
from hubbot.manifest import FileFacts, ManifestEntry

RECORDS_NAME = "hubbot-results.json"
FORMAT = "hubbot-results"
VERSION = 1


def card_records(data: CardInput, manifest: dict[str, ManifestEntry], results: dict[str, dict]) -> dict[str, Any]:
    """The records of the files on a card rendered from ``data`` (manifest entries and bench results by file)."""
    variants = {}
    for r in data.rows:
        base = manifest.get(r.whole_file)
        facts = FileFacts(output=r.output, embeddings=r.embeddings, tied=r.tied,
                          tensor_types={t.type: t.count for t in r.tensor_types})
        entry = replace(base.portable(), file_facts=facts) if base else ManifestEntry(file_facts=facts)
        variants[r.whole_file] = {"entry": entry.to_json(), "result": results.get(r.whole_file)}
    imatrix = {}
    if data.imatrix is not None and data.imatrix.name in manifest:
        imatrix[data.imatrix.name] = manifest[data.imatrix.name].portable().to_json()
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

    def entry(self, file: str) -> ManifestEntry | None:
        """The recorded entry of variant ``file``; None when there is none this hubbot can read."""
        rec = self.variants.get(file)
        return _entry_of(rec.get("entry")) if isinstance(rec, dict) else None

    def entries(self) -> dict[str, ManifestEntry]:
        """The readable recorded entries of every variant, by whole file name."""
        return {f: e for f in self.variants if (e := self.entry(f)) is not None}

    def imatrix_entry(self, file: str) -> ManifestEntry | None:
        return _entry_of(self.imatrix.get(file))

    def result(self, file: str) -> dict | None:
        rec = self.variants.get(file)
        return rec.get("result") if isinstance(rec, dict) and isinstance(rec.get("result"), dict) else None


def _entry_of(raw: Any) -> ManifestEntry | None:
    # Another hubbot's record that does not read as an entry is left out, like an unknown key.
    try:
        return ManifestEntry.from_json(raw)
    except ValueError:
        return None


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
