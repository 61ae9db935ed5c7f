"""Every example in the docs runs (issue 11): each ```bash block of README.md and docs/*.md
is executed, in order, by bash in a workspace of its own, so the docs cannot drift from
the tool. Blocks marked ```text show templates or output and are not run; plain ```
blocks in results.md and datasets.md are the long reproduction commands of measured
results, which `make bench` and the reference runs cover.

The workspace holds what the examples name: the toy files as `data/` with manifests
shaped for each task (`photos.csv` multi-label, `listings.csv` regression, ...), a
trained run `RUN`, a class-per-folder `photos/` with `captions.csv`. `MMCLI_CONFIG`
gives every command a one-epoch budget on 32-pixel images, and `--epochs N` and a toy
set's `--n N` are cut to SUITE_EPOCHS and SUITE_ROWS (`shrunk`): the commands run as
written, only smaller.

Where the system can (fork and passing file descriptors over a Unix socket), `mmcli` in
the examples is a bash function that hands the command to a fork server
(mmcli_forkserver.py): torch is imported once instead of about 80 times, the command
still runs `mmcli.cli.main()` in a process of its own with the example's arguments,
folder, environment, stdin, stdout, stderr and exit status. Commands that mmcli itself
starts (`python -m mmcli` jobs, torchrun) and the workspace's training run start as
usual.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


PYTHON_DOCS = {"python.md"}  # pages whose ```python blocks are examples to run (elsewhere: excerpts of modules)


def bash_blocks(path: Path) -> list[str]:
    """The document's runnable blocks as bash, in order; on the Python API's page a ```python
    block runs as `python - <<'EOF' ... EOF` in the same workspace."""
    return [code if lang == "bash" else f"python - <<'MMCLI_PY_EOF'\n{code}MMCLI_PY_EOF\n"
            for lang, code in BLOCK.findall(path.read_text(encoding="utf-8"))
            if lang == "bash" or path.name in PYTHON_DOCS]


def test_the_docs_the_issue_lists_exist():
    for name in ("index", "quickstart", "your-data", "compare", "cookbook", "cli", "datasets"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    index = (ROOT / "docs" / "index.md").read_text()
    assert all(f"({n}.md)" in index for n in ("quickstart", "your-data", "compare", "cookbook", "cli"))


def test_every_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    assert [p for p in pages if f"({p})" not in index] == []


TEST_ID = re.compile(r"^(tests/[\w/]+\.py)::(\w+)(?:\[(.+)\])?$")


def hostile_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "hostile-inputs.md").read_text(encoding="utf-8")
    rows = [line.strip().strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows if row[0].strip() != "input or fault"]


def test_every_hostile_input_in_the_table_is_driven_by_a_test_that_exists():
    """docs/hostile-inputs.md: at least 80 inputs and faults, each naming a test function
    that exists (and, for a parametrized case, whose case id appears in its file)."""
    rows = hostile_rows()
    assert len(rows) >= 80, len(rows)
    assert len({r[0] for r in rows}) == len(rows), "an input is listed twice"
    for row in rows:
        assert len(row) == 3 and row[1], row
        match = TEST_ID.match(row[2])
        assert match, f"not a test id: {row[2]!r}"
        path, function, case = match.groups()
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {function}\(", source, re.M), row[2]
        assert case is None or case in source, row[2]


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
    if SHARED_DATA.parent.is_dir():  # ../shared/data and ../shared/weights
        (base / "shared").symlink_to(SHARED_DATA.parent)
    return ws


def runnable_blocks(doc: Path) -> list[str]:
    """The document's bash blocks, less those that build from ../shared/data or read
    ../shared/weights when it is absent (each such block stands alone: the blocks after it
    do not read what it makes)."""
    shared = {"../shared/data": SHARED_DATA, "../shared/weights": SHARED_DATA.parent / "weights"}
    return [b for b in bash_blocks(doc) if all(folder.is_dir() or name not in b for name, folder in shared.items())]


def _skip_reason(doc: Path) -> str | None:
    blocks = runnable_blocks(doc)
    if not blocks:
        return "its examples build from ../shared/data, which is absent"
    if "jq " in "\n".join(blocks) and shutil.which("jq") is None:
        return "jq is not installed; these examples pipe into it"
    return None


SUITE_EPOCHS, SUITE_ROWS = 2, 240


def shrunk(script: str) -> str:
    """The examples' `--epochs N` and `--n N` at most SUITE_EPOCHS and SUITE_ROWS: what the
    examples show is the commands, which run the same on less (the README's 600 toy
    examples trained for 8 epochs, and the comparisons on them, took most of the time)."""
    script = re.sub(r"(--epochs[ =])(\d+)", lambda m: m.group(1) + str(min(int(m.group(2)), SUITE_EPOCHS)), script)
    return re.sub(r"(--n[ =])(\d+)", lambda m: m.group(1) + str(min(int(m.group(2)), SUITE_ROWS)), script)


def test_the_suite_runs_the_examples_smaller_and_otherwise_as_written():
    assert shrunk("mmcli train toy --epochs 8 --nproc 2 --n 600") == "mmcli train toy --epochs 2 --nproc 2 --n 240"
    assert shrunk("mmcli datasets make toy t --n=100 --epochs=1") == "mmcli datasets make toy t --n=100 --epochs=1"


def _run_doc(doc: Path, workspace: Path, folder: Path, client: str | None) -> subprocess.CompletedProcess:
    """All bash blocks of one document, in order, in a copy of the workspace."""
    blocks = runnable_blocks(doc)
    ws = folder / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    if (workspace.parent / "shared").exists():
        (folder / "shared").symlink_to((workspace.parent / "shared").resolve())
    script = "set -eu\n" + "".join(f"echo \"### block {k + 1} at $SECONDS s\" >&2\n{shrunk(block)}\n" for k, block in enumerate(blocks))
    return _bash(script, ws, ws / "defaults.yaml", workspace.parent / "cache", client)


def _bash(script: str, cwd: Path, config: Path, cache: Path, client: str | None) -> subprocess.CompletedProcess:
    """Run a script as the examples run; `mmcli` is `client` where there is one."""
    if client:  # a function wins over PATH, also after `source .venv/bin/activate`
        script = f"mmcli() {{ {shlex.quote(client)} \"$@\"; }}\n" + script
    env = {**os.environ, "MMCLI_CONFIG": str(config), "MMCLI_NO_PROGRESS": "1",
           "MMCLI_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",  # two documents at once
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


class ForkServer:
    """mmcli_forkserver.py in a process of its own; `client()` is the command that runs
    `mmcli ARGS` through it, or None where it cannot run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = tempfile.mkdtemp(prefix="mmcli-fs-")  # short: a socket path has ~100 characters at most
        self.socket = os.path.join(self.folder, "s")
        self._client: str | None = None
        script = Path(sys.executable).parent / "mmcli"
        self.log = open(os.path.join(self.folder, "server.log"), "wb")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mmcli_forkserver.py"), self.socket, str(script)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)

    @staticmethod
    def possible() -> bool:
        import socket

        return hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")

    def client(self) -> str | None:
        import select
        import warnings

        from mmcli_forkserver import write_client

        if self._client is None:
            ready, _, _ = select.select([self.process.stdout], [], [], 300)
            if ready and self.process.stdout.readline() == b"ready\n":
                self._client = write_client(os.path.join(self.folder, "mmcli"), self.socket)
            else:
                self._client = ""
                self.log.flush()
                log = Path(self.folder, "server.log").read_text(errors="replace")[-2000:]
                warnings.warn(f"the mmcli fork server did not start; the examples start mmcli as usual (slower)\n{log}")
        return self._client or None

    def stop(self) -> None:
        self.process.stdin.close()  # the server's signal to stop
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


RUNNABLE = [d for d in DOCS if bash_blocks(d)]


@pytest.fixture(scope="module")
def fork_server():
    """Started before the workspace is built, so that its imports overlap that work."""
    if not ForkServer.possible():
        yield None
        return
    # each command brings its whole environment; the server's own matters for what the
    # libraries read when imported (OMP_NUM_THREADS)
    server = ForkServer({**os.environ, "MMCLI_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    yield server
    server.stop()


def _expected_cost(doc: Path) -> tuple[int, int]:
    """Which document's examples take longest: a comparison trains several runs (compare.md's
    four took 182 s of the 593 s that all documents took, on two lanes), then the length."""
    text = "".join(bash_blocks(doc))
    return len(re.findall(r"\bmmcli compare\b", text)), len(text)


@pytest.fixture(scope="module")
def doc_runs(fork_server, workspace, tmp_path_factory) -> dict[str, subprocess.CompletedProcess | str]:
    """Run every document's examples, two documents at a time: one core each."""
    from concurrent.futures import ThreadPoolExecutor

    client = fork_server.client() if fork_server else None
    results: dict[str, subprocess.CompletedProcess | str] = {}
    todo = []
    for doc in sorted(RUNNABLE, key=_expected_cost, reverse=True):  # the longest first, so the two lanes end together
        reason = _skip_reason(doc)
        if reason:
            results[doc.name] = reason
        else:
            todo.append(doc)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {doc.name: pool.submit(_run_doc, doc, workspace, tmp_path_factory.mktemp(doc.stem), client) for doc in todo}
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


def test_the_examples_mmcli_keeps_exit_codes_streams_folder_and_environment(fork_server, workspace, tmp_path):
    """`mmcli` as the examples run it (through the fork server where it runs) behaves as
    the command: exit status, stdin, stdout, stderr, and each call's folder and environment."""
    from mmcli import __version__

    script = f"""set -eu
mmcli --version
echo '{{"text": "a crimson roundish thing"}}' | mmcli predict {workspace / "RUN"} - > predicted.jsonl
mmcli train does-not-exist.csv --quiet 2> error.txt || echo "train: exit $?"
MMCLI_CONFIG=nope.yaml mmcli preprocess {workspace / "data"} --quiet 2>&1 || echo "preprocess: exit $?"
(cd {workspace} && mmcli evaluate RUN --json) > evaluated.json
mmcli no-such-command
echo "not reached"
"""
    result = _bash(script, tmp_path, workspace / "defaults.yaml", workspace.parent / "cache",
                   fork_server.client() if fork_server else None)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "No such command 'no-such-command'" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"mmcli {__version__}"
    assert "train: exit 2" in lines and "preprocess: exit 2" in lines and "not reached" not in lines, result.stdout
    assert "MMCLI_CONFIG=nope.yaml: no such file" in result.stdout
    assert "does-not-exist.csv" in (tmp_path / "error.txt").read_text()
    assert json.loads((tmp_path / "predicted.jsonl").read_text())["modalities_used"] == ["text"]
    assert "accuracy" in json.loads((tmp_path / "evaluated.json").read_text())
