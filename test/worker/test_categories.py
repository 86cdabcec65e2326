"""WordNet categories: the data.noun reader, the shipped table and name resolution.

Resolution rules are shown on the shipped WordNet table (the real model's classes) and on a
small hand-made taxonomy where each rule can be isolated.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vgi_vision.worker.vision.categories import CategoryError, Taxonomy, load_taxonomy
from vgi_vision.worker.vision.model import load_classifier

REPO = Path(__file__).resolve().parents[2]


def build_script():
    spec = importlib.util.spec_from_file_location("build_categories",
                                                  REPO / "scripts" / "build_categories.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 001 ~ 00001930 n 0000 | that which is perceived
00001930 03 n 02 animal 0 beast 0 002 @ 00001740 n 0000 ~ 00002000 n 0000 | a living thing
00002000 05 n 02 dog 0 domestic_dog 0 003 @ 00001930 n 0000 + 01234567 v 0101 @i 00003000 n 0000 | x
00003000 05 n 01 pet 0 001 @ 00001740 n 0000 | kept for company
"""


def test_data_noun_reader_follows_hypernyms_and_instance_hypernyms() -> None:
    script = build_script()
    synsets = script.parse_data_noun(DATA_NOUN)
    assert synsets["n00002000"] == (["dog", "domestic_dog"], ["n00001930", "n00003000"])
    assert synsets["n00001740"] == (["entity"], [])
    assert script.closure(["n00002000"], synsets) == \
        ["n00002000", "n00001930", "n00003000", "n00001740"]
    with pytest.raises(SystemExit, match="not a WordNet 3.0 noun synset"):
        script.closure(["n09999999"], synsets)


def shipped() -> Taxonomy:
    info = load_classifier().info
    return load_taxonomy(info.directory, info.metadata["categories"]["file"], info.wnids)


def test_shipped_table_covers_every_class_and_records_its_license() -> None:
    info = load_classifier().info
    entry = json.loads((info.directory / "metadata.json").read_text())["categories"]
    assert "wordnet-base" in entry["provenance"] and "sha256" in entry["provenance"]
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in entry["license_text"]
    taxonomy = shipped()
    assert all("n00001740" in taxonomy.ancestors[i] for i in range(1000))  # entity
    assert taxonomy.resolve("entity").classes.tolist() == list(range(1000))
    assert len(taxonomy.resolve("dog").classes) == 118


@pytest.mark.parametrize(("name", "wnid"), [
    ("dog", "n02084071"),              # the animal: its first lemma
    ("cat", "n02121620"),              # the true cat, not big cat (whose second lemma it is)
    ("big cat", "n02127808"),
    ("Domestic_Dog", "n02084071"),     # any lemma, any case, underscores or spaces
    ("  canis   familiaris ", "n02084071"),
    ("N02084071", "n02084071"),        # a WordNet id always works
    ("n07920052", "n07920052"),        # ... also a class's own id: a category of one
])
def test_names_resolve_as_meant(name: str, wnid: str) -> None:
    assert shipped().resolve(name).wnid == wnid


@pytest.mark.parametrize(("name", "message"), [
    ("car", r"ambiguous.*car \(n02958343, 10 classes.*car \(n02959942, 2 classes"),
    ("food", r"ambiguous.*n07555863.*n00021265"),
    ("espresso", r"no category named 'espresso'.*it names class n07920052"),
    ("vehicl", r"similar names: vehicle \(n04524313, 67 classes"),
    ("xyzzy", r"no category named 'xyzzy'.*see categories\(\)\)$"),
    ("n00000000", r"neither a class of this model nor a category"),
    ("", r"no category named ''"),
])
def test_unknown_and_ambiguous_names_list_candidates(name: str, message: str) -> None:
    with pytest.raises(CategoryError, match=message):
        shipped().resolve(name)


def test_first_lemma_breaks_a_tie_only_when_it_is_unique() -> None:
    lemmas = {"n1": ("tabby",), "n2": ("siamese",), "n10": ("cat", "true_cat"),
              "n11": ("big_cat", "cat"), "n12": ("kitty", "cat"), "n13": ("animal",)}
    parents = {"n1": ("n10",), "n2": ("n11",), "n10": ("n13",), "n11": ("n12",),
               "n12": ("n13",), "n13": ()}
    taxonomy = Taxonomy(("n1", "n2"), lemmas, parents)
    assert taxonomy.resolve("cat").wnid == "n10"
    assert taxonomy.ancestors == (("n10", "n13"), ("n11", "n12", "n13"))
    assert taxonomy.resolve("animal").classes.tolist() == [0, 1]
    tied = Taxonomy(("n1", "n2"), {**lemmas, "n11": ("cat",)}, parents)
    with pytest.raises(CategoryError, match="ambiguous.*n10.*n11|ambiguous.*n11.*n10"):
        tied.resolve("cat")
    with pytest.raises(CategoryError, match="it names class n1"):
        taxonomy.resolve("tabby")


def test_a_broken_categories_file_is_a_model_error(tmp_path: Path) -> None:
    from vgi_vision.errors import ModelError

    (tmp_path / "categories.tsv").write_text("wnid\tlemmas\tparents\nn1\tcat\tn9\n")
    with pytest.raises(ModelError, match="unusable.*lacks classes"):
        load_taxonomy(tmp_path, "categories.tsv", ("n1", "n2"))
    with pytest.raises(ModelError, match="unusable"):  # a parent it never defines
        load_taxonomy(tmp_path, "categories.tsv", ("n1",))
    with pytest.raises(ModelError, match="unusable"):
        load_taxonomy(tmp_path, "missing.tsv", ("n1",))
