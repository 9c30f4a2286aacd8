"""Bundles that cannot mix: every file in bundle.json with its SHA-256, shapes checked against each other at load,
and a folder written aside and swapped in whole, so a reader looping while it is rewritten never loads a mix."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.text import TextDataModule
from modules.mlp import mlp_body
from quantization import QuantizationData, quantize
from quantization.ship.bundle import MANIFEST, add_files, add_to_card, write_bundle
from runtime import BundleError, load_bundle
from runtime.bundle import REWRITE_MARKS, read_bundle_files
from storage.atomic import OLD_MARK, TMP_MARK, atomic_folder
from tests.helpers import write_text_corpus

TEXTS = ["good great car", "bad awful road", "the new bus", "words it never saw", "self driving city ride"]


def text_bundle_parts(folder: Path, max_features: int | None, seed: int):
    """A tiny corpus's datamodule (its vocabulary capped at ``max_features``), a seeded MLP over it, and its
    onnx_dynamic_int8 artifact reading term ids and weights."""
    dm = TextDataModule(str(write_text_corpus(folder / "corpus.csv", n=120)), max_features=max_features, batch_size=16)
    torch.manual_seed(seed)
    net = mlp_body(dm.input_dim, [8], 2, dropout=0.0).eval()
    dm.setup("fit")
    calibration = [x.to_dense() for x, _ in dm.train_dataloader()][:2]
    data = QuantizationData(example=calibration[0][:1], calibration=calibration, sparse_input=True)
    return dm, net, quantize(net, "onnx_dynamic_int8", data)


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory) -> dict[str, tuple]:
    """Two bundles' parts that differ in every file: vocabulary (20 and 28 terms), weights, classes, card."""
    tmp = tmp_path_factory.mktemp("two")
    parts = {"A": text_bundle_parts(tmp, 20, seed=0), "B": text_bundle_parts(tmp, None, seed=1)}
    assert parts["A"][0].input_dim == 20 and parts["B"][0].input_dim == 28
    return parts


def write(parts: tuple, folder: Path, name: str) -> Path:
    dm, net, artifact = parts
    return write_bundle(folder, artifact, net, dm.preprocessing(), [f"{name}0", f"{name}1"], {"which": name})


def reseal(folder: Path, **manifest_changes) -> None:
    """What a careful hand-edit does: bundle.json's `files` hashes made to match the files again."""
    manifest = json.loads((folder / MANIFEST).read_text())
    files = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in manifest["files"]}
    (folder / MANIFEST).write_text(json.dumps(manifest | {"files": files} | manifest_changes))


def test_every_file_is_listed_with_its_sha256_and_checked(two_bundles, tmp_path):
    folder = write(two_bundles["A"], tmp_path / "bundle", "A")
    add_files(folder, {"native/model.bin": b"\x00\x01", "native/c/model.c": b"int main(void) { return 0; }\n"})
    add_to_card(folder, {"footprint": {"peak_rss_bytes": 1}})
    manifest = json.loads((folder / MANIFEST).read_text())
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert manifest["version"] == 4 and sorted(manifest["files"]) == sorted(set(on_disk) - {MANIFEST})
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    bundle = load_bundle(folder)
    assert bundle.card["which"] == "A" and bundle.card["footprint"] == {"peak_rss_bytes": 1}
    with pytest.raises(ValueError, match=r"relative to the bundle \(not bundle.json\), got \['../escape.c'\]"):
        add_files(folder, {"../escape.c": b""})
    assert not (tmp_path / "escape.c").exists()
    (folder / "native/c/model.c").write_text("int main(void) { return 1; }\n")  # a file the loader never runs
    assert load_bundle(folder).card["which"] == "A"  # loading checks the files it runs on, and reads no other
    with pytest.raises(BundleError, match=r"native/c/model.c does not match the SHA-256 in bundle.json"):
        read_bundle_files(folder)  # every file: what a copy of the bundle is checked with


def test_a_file_of_another_bundle_is_refused(two_bundles, tmp_path):
    a, b = write(two_bundles["A"], tmp_path / "a", "A"), write(two_bundles["B"], tmp_path / "b", "B")
    (a / "preprocessing.json").write_bytes((b / "preprocessing.json").read_bytes())
    with pytest.raises(BundleError, match=r"preprocessing.json does not match the SHA-256 in bundle.json"):
        load_bundle(a)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({}, r"preprocessing.json gives 28 features per example \(a 28-term vocabulary\), but bundle.json says "
             r"input_dim 20: its files come from different bundles\. Write the bundle again\.$"),
        ({"input_dim": 28}, r"the artifact does not take the preprocessing's 28 features per example \(.*Gather"),
        ({"classes": ["A0", "A1", "A2"]}, r"the artifact gives 2 logits per example, bundle.json names 3 classes"),
    ],
    ids=["vocabulary-vs-input-dim", "vocabulary-vs-artifact-rows", "logits-vs-classes"],
)  # fmt: skip
def test_shapes_are_checked_against_each_other_at_load(two_bundles, tmp_path, edit, message):
    a, b = write(two_bundles["A"], tmp_path / "a", "A"), write(two_bundles["B"], tmp_path / "b", "B")
    if "classes" not in edit:  # B's 28-term vocabulary in A, its hashes made to match
        (a / "preprocessing.json").write_bytes((b / "preprocessing.json").read_bytes())
    reseal(a, **edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(a)


def test_a_refused_bundle_leaves_the_old_one_and_no_sibling(two_bundles, tmp_path):
    folder = write(two_bundles["A"], tmp_path / "bundle", "A")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="disk full"), atomic_folder(folder) as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("disk full")
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes holds other files \(todo.txt\) and no bundle.json"):
        write(two_bundles["A"], notes, "A")
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]


def test_the_reader_knows_the_writer_s_sibling_names():
    assert REWRITE_MARKS == (TMP_MARK, OLD_MARK)


def test_a_load_during_a_swap_waits_for_the_new_folder(two_bundles, tmp_path):
    folder = write(two_bundles["A"], tmp_path / "bundle", "A")
    aside = folder.with_name(f"bundle{OLD_MARK}0")
    os.rename(folder, aside)  # the moment between atomic_folder's two renames: no `bundle` at all
    timer = threading.Timer(0.05, os.rename, (aside, folder))
    timer.start()
    try:
        assert load_bundle(folder).card["which"] == "A"
    finally:
        timer.join()


def test_a_reader_looping_while_the_bundle_is_rewritten_never_loads_a_mix(two_bundles, tmp_path):
    folder = tmp_path / "bundle"
    expected = {}  # what each bundle, loaded whole, says about itself
    for name in ("A", "B"):
        bundle = load_bundle(write(two_bundles[name], tmp_path / name, name))
        expected[name] = (bundle.method, bundle.classes, bundle.input_dim, bundle.predict_proba(TEXTS))
    write(two_bundles["A"], folder, "A")
    rewrites, done, seen = 40, threading.Event(), {"A": 0, "B": 0, "mixed": 0, "errors": 0}

    def reader() -> None:
        while not done.is_set():
            try:
                bundle = load_bundle(folder)
            except BundleError:
                seen["errors"] += 1
                continue
            which = bundle.card.get("which")
            got = (bundle.method, bundle.classes, bundle.input_dim)
            whole = which in expected and got == expected[which][:3]
            if whole and np.array_equal(bundle.predict_proba(TEXTS), expected[which][3]):
                seen[which] += 1
            else:
                seen["mixed"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(rewrites):
            write(two_bundles["B" if i % 2 == 0 else "A"], folder, "B" if i % 2 == 0 else "A")
    finally:
        done.set()
        thread.join()
    assert seen["mixed"] == 0 and seen["errors"] == 0, seen
    assert seen["A"] > 0 and seen["B"] > 0, seen  # the reader ran through the rewrites, seeing both bundles
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B", "bundle"]  # no sibling left behind


def test_an_empty_text_is_refused_as_the_cli_refuses_it(two_bundles, tmp_path):
    bundle = load_bundle(write(two_bundles["A"], tmp_path / "bundle", "A"))
    with pytest.raises(ValueError, match=r"^Text 1 is empty \(nothing but white space\): there is nothing to classify"):
        bundle.predict(["good car", " \t"])
    assert len(bundle.predict(["zzz qqq"])) == 1  # no known term, but a text: answered, as the CLI answers it
