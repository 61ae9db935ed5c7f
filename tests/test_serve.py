"""`mmcli serve`: the real command as a subprocess on a free local port, asked with a real
HTTP client (urllib): good and bad requests, batches, base64 files, concurrency, and a
retrieval run's search index (served from a thread of this process)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_BODY_MB = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: Any = None, raw: bytes | None = None, method: str | None = None) -> tuple[int, Any]:
    """(status, the answer parsed as JSON): every answer, good or bad, must be JSON."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method or ("GET" if data is None else "POST"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def toy(toy_small) -> Path:
    """The toy data's folder (toy_small is its manifest)."""
    return toy_small.parent


@pytest.fixture(scope="module")
def toy_run(toy_small, tmp_path_factory) -> Path:
    import mmcli

    out = tmp_path_factory.mktemp("serve") / "run"
    mmcli.train(toy_small, modalities="image,text", epochs=1, set=["data.image_size=32"], out=out)  # no audio: quicker
    return out


@pytest.fixture(scope="module")
def server(toy_run, toy, tmp_path_factory) -> Iterator[dict]:
    """`mmcli serve RUN` in the toy data's folder (relative paths resolve there), with a
    temporary folder of its own (where files sent in base64 go)."""
    port = free_port()
    temporary = tmp_path_factory.mktemp("server-tmp")
    env = {**os.environ, "MMCLI_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(temporary)}
    process = subprocess.Popen([sys.executable, "-m", "mmcli", "serve", str(toy_run), "--port", str(port),
                                "--batch-wait-ms", "20", "--max-body-mb", str(MAX_BODY_MB)],
                               cwd=toy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"mmcli serve exited {process.returncode}:\n{process.stderr.read().decode()[-3000:]}")
        try:
            if call(base, "/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "mmcli serve did not answer /health in 120 s"
        time.sleep(0.2)
    yield {"base": base, "process": process, "tmp": temporary}
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def predictor(toy_run):
    import mmcli

    return mmcli.load(toy_run)


def example(toy: Path, i: int) -> dict:
    import csv

    row = list(csv.DictReader(open(toy / "manifest.csv", encoding="utf-8")))[i]
    return {"image": row["image"], "text": row["text"]}


def same_answer(got: dict, want: dict) -> None:
    assert got["id"] == want["id"] and got["label"] == want["label"] and got["modalities_used"] == want["modalities_used"]
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)  # batched: float noise


def test_health_and_info(server, predictor):
    assert call(server["base"], "/health") == (200, {"status": "ok", "task": "classification"})
    status, info = call(server["base"], "/info")
    assert status == 200 and info["task"] == "classification" and info["labels"] == predictor.labels
    assert [m["name"] for m in info["modalities"]] == ["image", "text"]
    assert "accuracy" in info["test_scores"] and "POST /predict" in info["routes"]
    assert info["server"]["max_body_mb"] == MAX_BODY_MB


def test_one_example_answers_as_the_python_api(server, predictor, toy, monkeypatch):
    monkeypatch.chdir(toy)  # the server's folder: relative paths resolve alike
    one = example(toy, 0)
    status, got = call(server["base"], "/predict?top_k=3", one)
    assert status == 200 and len(got["probabilities"]) == 3
    same_answer(got, predictor.predict(one, top_k=3)[0])
    status, got = call(server["base"], "/predict?explain=true", one)
    assert status == 200 and "modality_weights" in got


def test_a_batch_with_files_in_base64(server, predictor, toy, monkeypatch):
    monkeypatch.chdir(toy)
    path = example(toy, 1)["image"]
    png = base64.b64encode((toy / path).read_bytes()).decode()
    batch = [{"image": path, "id": "by-path"}, {"image": {"base64": png, "suffix": ".png"}, "id": "b64"},
             {"image": f"data:image/png;base64,{png}"}, {"text": "a crimson roundish thing", "id": 7}]
    status, got = call(server["base"], "/predict", batch)
    assert status == 200 and [g["id"] for g in got] == ["by-path", "b64", "3", "7"]
    for answer in got[1:3]:  # the same file sent in base64 is the same image
        assert answer["probabilities"] == pytest.approx(got[0]["probabilities"], abs=1e-4)
    assert list(server["tmp"].iterdir()) == []  # the files written for the request are gone
    same_answer(got[3], predictor.predict({"text": "a crimson roundish thing", "id": 7})[0])


BAD = {
    "misspelt field": ({"nmae": "x", "text": "hello"}, "'nmae'"),
    "number for a path": ({"image": 42}, "'image': a number where a path"),
    "list for a text": ({"text": ["a", "b"]}, "'text': a list where a string"),
    "no modality": ({}, "none of the modalities"),
    "not an object": ("hello", "the body is a string"),
    "a number in a batch": ([{"text": "fine"}, 5], "row 2: is a number, not a JSON object"),
    "not an image": ({"image": "manifest.csv"}, "'image': not an image"),
    "file not found": ({"image": "images/nope.png"}, "file not found"),
    "bad base64": ({"image": {"base64": "@@not base64@@", "suffix": ".png"}}, "not valid base64"),
    "base64 of no image": ({"image": {"base64": base64.b64encode(b"plain text, no pixels").decode(), "suffix": ".png"}},
                           "not an image that Pillow can read: (the base64 image of example 1)"),
    "bad suffix": ({"image": {"base64": "aGk=", "suffix": "png/../x"}}, "'suffix'"),
}


@pytest.mark.parametrize("case", list(BAD), ids=lambda c: c.replace(" ", "-"))
def test_a_bad_request_is_a_400_that_names_the_problem(server, case):
    body, says = BAD[case]
    status, got = call(server["base"], "/predict", body)
    assert status == 400 and says in got["error"], got
    assert "Traceback" not in got["error"] and "mmcli-serve-" not in got["error"]  # no temporary path either


@pytest.mark.parametrize("path,raw,status,says", [
    ("/predict", b'{"text": "unfinished', 400, "not JSON"),
    ("/predict", b"[" * 200_000, 400, "nests"),
    ("/predict?top_k=0", b'{"text": "x"}', 400, "'top_k'"),
    ("/predict?topk=3", b'{"text": "x"}', 400, "unknown query parameter 'topk'"),
    ("/predict?beam=2", b'{"text": "x"}', 400, "captioning"),
    ("/nowhere", b"{}", 404, "no route POST /nowhere"),
    ("/search", b'{"query": "red"}', 404, "retrieval runs"),
    ("/caption", b'{"text": "red"}', 404, "captioning runs"),
], ids=["broken-json", "deep-json", "top-k-0", "unknown-parameter", "beam-on-a-classifier", "unknown-route", "search", "caption"])
def test_bad_requests_of_other_kinds(server, path, raw, status, says):
    got_status, got = call(server["base"], path, raw=raw)
    assert got_status == status and says in got["error"], got


def test_a_wrong_method_and_an_oversized_body(server):
    status, got = call(server["base"], "/predict", method="GET")
    assert status == 405 and "POST /predict" in got["error"]
    big = json.dumps({"text": "x" * int(1.5 * MAX_BODY_MB * 1024 * 1024)}).encode()
    status, got = call(server["base"], "/predict", raw=big)
    assert status == 413 and f"{MAX_BODY_MB} MB" in got["error"] and "--max-body-mb" in got["error"]
    assert call(server["base"], "/health")[0] == 200


def test_embed_gives_a_vector_per_modality(server, toy, monkeypatch):
    monkeypatch.chdir(toy)
    status, got = call(server["base"], "/embed", [example(toy, 2), {"text": "blue"}])
    assert status == 200 and set(got[0]) == {"id", "image", "text"} and set(got[1]) == {"id", "text"}
    assert len(got[0]["text"]) == len(got[1]["text"]) > 1


def test_concurrent_clients_get_their_own_answers_in_shared_model_calls(server, predictor, toy, monkeypatch):
    monkeypatch.chdir(toy)
    asked = [{**example(toy, i), "id": f"c{i}"} for i in range(8)] + [{"image": "images/none.png", "id": "bad"}]
    wanted = {w["id"]: w for w in predictor.predict(asked[:8])}
    batches_before = call(server["base"], "/info")[1]["batches"]
    with ThreadPoolExecutor(len(asked) + 1) as pool:
        answers = list(pool.map(lambda one: call(server["base"], "/predict", one), asked))
        health = pool.submit(call, server["base"], "/health").result()
    assert health[0] == 200
    for one, (status, got) in zip(asked[:8], answers):
        assert status == 200
        same_answer(got, wanted[one["id"]])
    assert answers[-1][0] == 400 and "images/none.png" in answers[-1][1]["error"]  # fails alone
    info = call(server["base"], "/info")[1]
    assert info["largest_batch"] > 1 and info["batches"] - batches_before < len(asked)


def test_the_server_stops_when_terminated(server):
    process = server["process"]
    process.terminate()
    process.wait(timeout=30)
    assert process.returncode is not None
    assert "Traceback" not in process.stderr.read().decode()


def test_without_fastapi_the_command_says_what_to_install(cli, toy_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = cli("serve", toy_run, "--port", "0")
    assert result.exit_code == 2 and "pip install 'mmcli[serve]'" in result.output


def test_a_port_in_use_and_an_index_for_a_classifier_are_usage_errors(cli, toy_run, toy_small):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("serve", toy_run, "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2 and "--port" in result.output and "another program" in result.output
    result = cli("serve", toy_run, "--port", "0", "--index", toy_small)
    assert result.exit_code == 2 and "retrieval" in result.output


def test_a_batch_that_fails_is_predicted_request_by_request(toy_run, toy, monkeypatch):
    """The micro-batcher's model call: one request's unreadable file fails that request only."""
    from mmcli.errors import DataError
    from mmcli.serve import Settings
    from mmcli.serve.service import PredictOptions, Service

    monkeypatch.chdir(toy)
    service = Service(Settings(str(toy_run)))
    good, bad = service.records([{"text": "red"}, {"text": "blue"}]), service.records([{"image": "images/none.png"}])
    results = service.predict_jobs([(good, PredictOptions()), (bad, PredictOptions()), (good, PredictOptions(top_k=1))])
    assert [r["id"] for r in results[0]] == ["1", "2"] and isinstance(results[1], DataError)
    assert len(results[2][0]["probabilities"]) == 1  # other options: a call of its own


def test_answers_hold_no_value_json_cannot_write():
    from mmcli.serve.app import JSON

    assert JSON({"value": float("nan"), "scores": [1.0, float("inf")]}).body == b'{"value":null,"scores":[1.0,null]}'


@contextmanager
def served_in_a_thread(settings) -> Iterator[str]:
    """The app of `settings` on uvicorn in a thread of this process (torch is imported already)."""
    import uvicorn

    from mmcli.serve.app import build_app
    from mmcli.serve.server import bind, url
    from mmcli.serve.service import Service

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(build_app(Service(settings)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield url(sock, "127.0.0.1")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_search_ranks_as_predict_query_with_the_index_embedded_once(toy_small, tmp_path, monkeypatch):
    import mmcli
    from mmcli.serve import Settings

    run = tmp_path / "retrieval"
    mmcli.train(toy_small, task="retrieval", modalities="image,text", epochs=1, set=["data.image_size=32"], out=run)
    index = toy_small
    want = mmcli.load(run).search(["a red square", "a blue circle"], index=index, top_k=3)
    import mmcli.search

    embedded = []
    original = mmcli.search.embed
    monkeypatch.setattr(mmcli.search, "embed", lambda *a, **k: embedded.append(len(a[1])) or original(*a, **k))
    with served_in_a_thread(Settings(str(run), index=str(index))) as base:
        at_start = list(embedded)
        status, got = call(base, "/search?top_k=3", {"queries": ["a red square", "a blue circle"]})
        assert status == 200 and [g["query"] for g in got] == ["a red square", "a blue circle"]
        assert [(r["id"], r["score"]) for g in got for r in g["results"]] == \
            [(w["id"], pytest.approx(w["score"], abs=1e-5)) for w in want]
        assert embedded[len(at_start):] == [2]  # a request embeds its queries only
        assert sum(at_start) >= 240  # the index's items, once
        status, got = call(base, "/search", {"query": "red", "kind": "text"})
        assert status == 400 and "got the keys kind, query" in got["error"]
        status, got = call(base, "/search?kind=audio", {"query": "red"})
        assert status == 400 and "this run aligns" in got["error"]
        assert call(base, "/predict", {"text": "red"})[0] == 404
