"""Every example in the docs runs (issue 11): each ```bash block of README.md and docs/*.md
is executed, in order, by bash in a workspace of its own, so the docs cannot drift from
the tool. Blocks marked ```text show templates or output and are not run; plain ```
blocks in results.md and datasets.md are the long reproduction commands of measured
results, which `make bench` and the reference runs cover.

The workspace holds what the examples name: the toy files as `data/` with manifests
shaped for each task (`photos.csv` multi-label, `listings.csv` regression, ...), a
trained run `RUN`, a class-per-folder `photos/` with `captions.csv`. `MMCLI_CONFIG`
gives every command a one-epoch budget on 32-pixel images (flags such as `--epochs`
still win): the commands run as written, only smaller.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def bash_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_the_docs_the_issue_lists_exist():
    for name in ("index", "quickstart", "your-data", "compare", "cookbook", "cli", "datasets"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    index = (ROOT / "docs" / "index.md").read_text()
    assert all(f"({n}.md)" in index for n in ("quickstart", "your-data", "compare", "cookbook", "cli"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from mmcli.cli import app

    base = tmp_path_factory.mktemp("docs")
    ws = base / "ws"
    ws.mkdir()
    runner = CliRunner()
    assert runner.invoke(app, ["datasets", "make", "toy", str(ws / "data"), "--n", "240", "--quiet"]).exit_code == 0
    rows = list(csv.DictReader(open(ws / "data" / "manifest.csv", encoding="utf-8")))
    for row in rows:
        row["image"], row["audio"] = "data/" + row["image"], "data/" + row["audio"]

    def write(name: str, label, keep=lambda i, r: True) -> None:
        chosen = [(i, r) for i, r in enumerate(rows) if keep(i, r)]
        with open(ws / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "image", "audio", "text", "label"])
            writer.writeheader()
            writer.writerows({**r, "label": label(i, r)} for i, r in chosen)

    write("photos.csv", lambda i, r: r["label"].replace("-", "|"))
    write("tags.csv", lambda i, r: r["label"].replace("-", ";"))
    write("listings.csv", lambda i, r: f"{(len(r['text']) * 3.5 + i % 7):.1f}")
    write("skewed.csv", lambda i, r: r["label"], keep=lambda i, r: not r["label"].startswith("blue") or i % 4 == 0)
    with open(ws / "coco.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**r, "label": r["label"].split("-")}) + "\n")
    for i, r in enumerate(rows[:24]):  # a class-per-folder tree, and a captions CSV for it
        folder = ws / "photos" / r["label"].split("-")[1]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ws / r["image"], folder / f"{i}.png")
    with open(ws / "captions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows((f"{r['label'].split('-')[1]}/{i}.png", r["text"]) for i, r in enumerate(rows[:24]))
    (ws / "defaults.yaml").write_text("train:\n  epochs: 1\ndata:\n  image_size: 32\n")
    (base / "cache").mkdir()  # its own cache: the README's `mmcli cache clean` must not empty the suite's
    env = {**os.environ, "MMCLI_CONFIG": str(ws / "defaults.yaml"), "MMCLI_CACHE_DIR": str(base / "cache")}
    subprocess.run([sys.executable, "-m", "mmcli", "train", "data", "--out", "RUN", "--quiet"], cwd=ws, env=env,
                   check=True, capture_output=True, timeout=600)
    activate = Path(sys.prefix) / "bin" / "activate"
    if activate.is_file():
        (ws / ".venv").symlink_to(Path(sys.prefix))
    else:  # not in a virtual environment: `source .venv/bin/activate` has nothing to do
        (ws / ".venv" / "bin").mkdir(parents=True)
        (ws / ".venv" / "bin" / "activate").write_text("true\n")
    if SHARED_DATA.is_dir():
        (base / "shared").symlink_to(SHARED_DATA.parent)
    return ws


def runnable_blocks(doc: Path) -> list[str]:
    """The document's bash blocks, less those that build from ../shared/data when it is absent
    (each such block stands alone: the blocks after it do not read what it makes)."""
    return [b for b in bash_blocks(doc) if SHARED_DATA.is_dir() or "../shared/data" not in b]


def _skip_reason(doc: Path) -> str | None:
    blocks = runnable_blocks(doc)
    if not blocks:
        return "its examples build from ../shared/data, which is absent"
    if "jq " in "\n".join(blocks) and shutil.which("jq") is None:
        return "jq is not installed; these examples pipe into it"
    return None


def _run_doc(doc: Path, workspace: Path, folder: Path) -> subprocess.CompletedProcess:
    """All bash blocks of one document, in order, in a copy of the workspace."""
    blocks = runnable_blocks(doc)
    ws = folder / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    if (workspace.parent / "shared").exists():
        (folder / "shared").symlink_to((workspace.parent / "shared").resolve())
    script = "set -eu\n" + "".join(f"echo '### block {k + 1}' >&2\n{block}\n" for k, block in enumerate(blocks))
    env = {**os.environ, "MMCLI_CONFIG": str(ws / "defaults.yaml"), "MMCLI_NO_PROGRESS": "1",
           "MMCLI_CACHE_DIR": str(workspace.parent / "cache"), "OMP_NUM_THREADS": "1",  # two documents at once
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=1200)


RUNNABLE = [d for d in DOCS if bash_blocks(d)]


@pytest.fixture(scope="module")
def doc_runs(workspace, tmp_path_factory) -> dict[str, subprocess.CompletedProcess | str]:
    """Run every document's examples, two documents at a time: most of their time is
    Python and torch starting up, one core each."""
    from concurrent.futures import ThreadPoolExecutor

    results: dict[str, subprocess.CompletedProcess | str] = {}
    todo = []
    for doc in sorted(RUNNABLE, key=lambda d: -len("".join(bash_blocks(d)))):  # the longest first
        reason = _skip_reason(doc)
        if reason:
            results[doc.name] = reason
        else:
            todo.append(doc)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {doc.name: pool.submit(_run_doc, doc, workspace, tmp_path_factory.mktemp(doc.stem)) for doc in todo}
        results.update({name: future.result() for name, future in futures.items()})
    return results


@pytest.mark.parametrize("doc", RUNNABLE, ids=lambda d: d.name)
def test_doc_examples_run(doc: Path, doc_runs):
    result = doc_runs[doc.name]
    if isinstance(result, str):
        pytest.skip(result)
    last_block = ([line for line in result.stderr.splitlines() if line.startswith("### block")] or ["before any block"])[-1]
    assert result.returncode == 0, f"{doc.name}, {last_block} failed:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr[-3000:]
