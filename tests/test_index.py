"""`mmcli index build RUN DATA --out INDEX` (issue 20, retrieval in practice): a retrieval
run's embeddings of a data set saved once, then searched by predict, serve and the Python
API without embedding the data again; the same answers as a manifest embedded on the spot;
refused with other weights, a damaged file or a foreign folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

QUERIES = ["a red square", "a blue circle"]


@pytest.fixture(scope="module")
def retrieval(toy_small, tmp_path_factory) -> tuple[Path, Path]:
    """A toy retrieval run (image <-> caption) and its captions manifest (several captions per photo)."""
    import mmcli

    folder = tmp_path_factory.mktemp("index")
    captions = toy_small.parent / "captions.csv"
    run = folder / "run"
    mmcli.train(captions, task="retrieval", epochs=1, set=["data.image_size=32"], out=run)
    return run, captions


@pytest.fixture(scope="module")
def built(retrieval, tmp_path_factory) -> tuple[Path, dict]:
    from typer.testing import CliRunner

    from mmcli.cli import app

    run, captions = retrieval
    out = tmp_path_factory.mktemp("built") / "idx"
    result = CliRunner().invoke(app, ["index", "build", str(run), str(captions), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.splitlines()[-1])


def _distinct(captions: Path, column: str) -> int:
    return len({row[column] for row in csv.DictReader(open(captions, encoding="utf-8")) if row[column].strip()})


def test_the_index_holds_each_distinct_item_once_as_unit_vectors(retrieval, built):
    import numpy as np

    run, captions = retrieval
    out, record = built
    assert record["weights"] == "best.safetensors" and len(record["weights_sha256"]) == 64
    for name, side in record["sides"].items():
        assert side["items"] == _distinct(captions, side["column"])  # a photo on several caption rows: one item
        vectors = np.load(out / f"{side['file']}.npy")
        assert vectors.shape == (side["items"], side["dim"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert set(json.loads((out / "index.json").read_text())["files"]) == {p.name for p in out.iterdir()} - {"index.json"}


def test_predict_serve_and_api_search_the_built_index_as_the_manifest_without_embedding_it(retrieval, built, cli, monkeypatch):
    pytest.importorskip("fastapi")
    import mmcli
    import mmcli.search
    from mmcli.serve import Settings
    from test_serve import call, served_in_a_thread

    run, captions = retrieval
    out, _ = built
    answers = {}
    for index in (captions, out):
        result = cli("predict", run, "--query-text", QUERIES[0], "--query-text", QUERIES[1], "--index", index, "-k", "4")
        assert result.exit_code == 0, result.output
        answers[index] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(a["query"], a["id"]) for a in answers[out]] == [(a["query"], a["id"]) for a in answers[captions]]
    assert [a["score"] for a in answers[out]] == pytest.approx([a["score"] for a in answers[captions]], abs=1e-5)
    assert len({a["id"] for a in answers[out] if a["query"] == QUERIES[0]}) == 4  # no photo twice
    embedded = []
    original = mmcli.search.embed
    monkeypatch.setattr(mmcli.search, "embed", lambda *a, **k: embedded.append(len(a[1])) or original(*a, **k))
    found = mmcli.load(run).search(QUERIES, index=out, top_k=4)
    assert [f["id"] for f in found] == [a["id"] for a in answers[out]] and embedded == [2]  # the queries only
    with served_in_a_thread(Settings(str(run), index=str(out))) as base:
        assert embedded == [2]  # starting the server read the vectors: nothing embedded
        status, info = call(base, "/info")
        assert status == 200 and info["index"]["built"] is True
        status, got = call(base, "/search?top_k=4", {"queries": QUERIES})
        assert status == 200 and [r["id"] for g in got for r in g["results"]] == [a["id"] for a in answers[out]]


def test_faiss_and_torch_rank_alike(retrieval, built, monkeypatch):
    pytest.importorskip("faiss")
    import mmcli.search
    from mmcli.pipeline import load_run

    run, _ = retrieval
    out, _ = built
    loaded = load_run(run)
    ranked = {}
    for backend in ("faiss", "torch"):
        if backend == "torch":
            monkeypatch.setattr(mmcli.search, "faiss_module", lambda: None)
        index = mmcli.search.SearchIndex(loaded, out)
        found = index.search(loaded, "text", QUERIES, 10)
        ranked[backend] = [[(r["id"], r["score"]) for r in rows] for rows in found]
    for a, b in zip(ranked["faiss"], ranked["torch"]):
        assert [i for i, _ in a] == [i for i, _ in b] and [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)


def test_other_weights_a_damaged_file_and_a_foreign_folder_are_refused(retrieval, built, cli, tmp_path):
    from safetensors.torch import save_file

    from mmcli import runs

    run, captions = retrieval
    out, _ = built
    other = tmp_path / "other"
    shutil.copytree(run, other)
    state, meta = runs.read_weights(other / "best.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    save_file({k: v.contiguous() for k, v in state.items()}, str(other / "best.safetensors"), metadata=meta)
    result = cli("predict", other, "--query-text", "red", "--index", out)
    assert result.exit_code == 2 and "build it again" in result.output and "another space" in result.output
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "side0.npy").write_bytes((damaged / "side0.npy").read_bytes()[:100])
    result = cli("predict", run, "--query-text", "red", "--index", damaged)
    assert result.exit_code == 2 and "side0.npy" in result.output
    again = cli("index", "build", run, captions, "--out", out)
    assert again.exit_code == 2 and "--overwrite" in again.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = cli("index", "build", run, captions, "--out", foreign, "--overwrite")
    assert refused.exit_code == 2 and "index.json" in refused.output and (foreign / "notes.txt").read_text() == "mine"
    replaced = cli("index", "build", run, captions, "--out", damaged, "--overwrite", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    assert cli("predict", run, "--query-text", "red", "--index", damaged).exit_code == 0


def test_evaluate_plots_draws_each_querys_nearest_items_with_its_hits(retrieval, cli):
    """The grid's items are each query's nearest by cosine, and a green frame is exactly a
    pair that some row of the test split holds."""
    from PIL import Image

    from mmcli.evaluation.api import evaluate_run, write_plots
    from mmcli.reporting.showcase import CELL

    run, _ = retrieval
    outputs: dict = {}
    scores = evaluate_run(run, outputs=outputs, save=False)
    chosen, emb = outputs["rows"], outputs["outputs"].float()
    entries = outputs["run"].task.showcase(emb, chosen.encoded, [], 3)
    sources = chosen.encoded.sources
    pairs = set(zip(sources["image"], sources["caption"]))
    for entry, side in zip(entries, (0, 1)):
        assert len(entry["rows"]) == 3
        for shown in entry["rows"]:
            q = shown["row"]
            found = [row for row, _ in shown["found"]]
            cosines = [float(emb[q, side] @ emb[row, 1 - side]) for row in found]
            assert cosines == sorted(cosines, reverse=True) and len(found) == 5
            for row, hit in shown["found"]:
                a, b = (q, row) if side == 0 else (row, q)
                assert hit == ((sources["image"][a], sources["caption"][b]) in pairs)
    written = write_plots(run, scores, outputs)
    grids = [p for p in written if p.name.startswith("retrieval-")]
    assert sorted(p.name for p in grids) == ["retrieval-caption-to-image-all.png", "retrieval-image-to-caption-all.png"] \
        or sorted(p.name for p in grids) == ["retrieval-caption-to-image-test.png", "retrieval-image-to-caption-test.png"]
    with Image.open(grids[0]) as im:
        assert im.size[0] == round(6 * CELL * 100)


def test_evaluate_plots_draws_the_generated_captions(toy_small, tmp_path, cli):
    import mmcli

    run = tmp_path / "cap"
    mmcli.train(toy_small.parent / "captions.csv", task="captioning", modalities="image,caption", epochs=1,
                set=["data.image_size=32"], out=run)
    result = cli("evaluate", run, "--plots", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.splitlines()[-1])
    assert (run / "captions-test.png").is_file()
    from mmcli.evaluation.api import evaluate_run

    outputs: dict = {}
    evaluate_run(run, outputs=outputs, save=False)
    shown = outputs["run"].task.showcase(outputs["outputs"], outputs["rows"].encoded, outputs["run"].labels, 5)[0]["rows"]
    assert [s["generated"] for s in shown] == [s["generated"] for s in scores["samples"]]
    assert [s["references"] for s in shown] == [s["references"] for s in scores["samples"]]
