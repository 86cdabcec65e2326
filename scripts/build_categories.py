"""Build a model's WordNet category table from Debian's ``wordnet-base`` package.

ImageNet-1k classes are WordNet 3.0 noun synsets (their ids are ``n`` + the synset's offset in
``data.noun``). This script reads WordNet's own ``data.noun`` and writes, beside the model's
labels, ``categories.tsv``: every class synset and every synset above one (by hypernym and
instance-hypernym links), with its lemmas and its direct parents. It records the WordNet
license and the package's provenance under ``categories`` in the model's ``metadata.json``.

    apt-get download wordnet-base          # no root needed
    python -m scripts.build_categories wordnet-base_*.deb [--model efficientnet-lite0]

A folder already holding ``data.noun`` (an extracted package) may be given instead of the
``.deb``, which is extracted with ``dpkg-deb -x``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
DATA_NOUN = Path("usr/share/wordnet/data.noun")
COPYRIGHT = Path("usr/share/doc/wordnet-base/copyright")
HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym


def parse_data_noun(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """wnid -> (lemmas, hypernym wnids), from WordNet's ``data.noun`` (see wndb(5WN))."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("  "):  # the license header is indented
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, word_count = fields[0], int(fields[3], 16)
        lemmas = fields[4:4 + 2 * word_count:2]
        pointers_at = 4 + 2 * word_count
        pointer_count = int(fields[pointers_at])
        parents = []
        for i in range(pointer_count):
            symbol, target, pos = fields[pointers_at + 1 + 4 * i:pointers_at + 4 + 4 * i]
            if symbol in HYPERNYM_POINTERS and pos == "n":
                parents.append("n" + target)
        synsets["n" + offset] = (lemmas, parents)
    return synsets


def closure(classes: list[str], synsets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """The classes and every synset above them, in breadth-first order from the classes."""
    seen: dict[str, None] = {}
    queue = deque(classes)
    while queue:
        wnid = queue.popleft()
        if wnid in seen:
            continue
        if wnid not in synsets:
            raise SystemExit(f"{wnid} is not a WordNet 3.0 noun synset")
        seen[wnid] = None
        queue.extend(synsets[wnid][1])
    return list(seen)


def extracted(source: Path, workdir: Path) -> Path:
    """The root of the package's files: ``source`` itself, or the ``.deb`` extracted."""
    if source.is_dir():
        return source
    subprocess.run(["dpkg-deb", "-x", str(source), str(workdir)], check=True)
    return workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path,
                        help="wordnet-base .deb (from `apt-get download wordnet-base`) or a "
                             "folder it was extracted to")
    parser.add_argument("--model", default="efficientnet-lite0")
    args = parser.parse_args(argv)
    model_dir = MODELS / args.model
    metadata_file = model_dir / "metadata.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    label_rows = (model_dir / metadata["labels"]).read_text(encoding="utf-8").splitlines()[1:]
    classes = [row.split("\t")[1] for row in label_rows]

    with tempfile.TemporaryDirectory() as tmp:
        root = extracted(args.package, Path(tmp))
        synsets = parse_data_noun((root / DATA_NOUN).read_text(encoding="utf-8"))
        license_text = (root / COPYRIGHT).read_text(encoding="utf-8")
    package = args.package.name
    digest = hashlib.sha256(args.package.read_bytes()).hexdigest() if args.package.is_file() \
        else None

    lines = ["wnid\tlemmas\tparents"]
    for wnid in closure(classes, synsets):
        lemmas, parents = synsets[wnid]
        if any("," in lemma or "\t" in lemma for lemma in lemmas):
            raise SystemExit(f"{wnid}: a lemma contains a separator: {lemmas}")
        lines.append(f"{wnid}\t{','.join(lemmas)}\t{','.join(parents)}")
    out = model_dir / "categories.tsv"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")

    metadata["categories"] = {
        "file": out.name,
        "source": "WordNet 3.0 data.noun (hypernym and instance-hypernym links)",
        "provenance": f"Debian package wordnet-base ({package}"
                      + (f", sha256 {digest}" if digest else "") + "), converted by "
                      "scripts/build_categories.py",
        "license": "WordNet 3.0 license (Princeton University), text below",
        "license_text": license_text.split("\nFiles: debian/*", 1)[0],
    }
    metadata_file.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(lines) - 1} synsets above and including {len(classes)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
