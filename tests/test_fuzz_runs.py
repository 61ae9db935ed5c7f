"""Fuzzing (Hypothesis) of config YAML files and of every file of a run folder (issue 23):
one file of a real trained run is replaced by fuzzed content, either a mutation of the
real file (a value replaced, a key dropped or added, anywhere in it) or random bytes, and
the run is loaded as evaluate and predict load it, then used for one prediction and for
the test split. Whatever the file holds, only mmcli's own errors come out."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import write_own_manifest
from mmcli.errors import MmcliError

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.sampled_from(["", "image", "text", "audio", "tabular", "pretrained", "own", "[PAD]", "F32", "I64",
                                    "classification", "regression", "../x", "64", "best"]))
json_values = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                          st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                           max_leaves=12)


@st.composite
def mutated(draw, value: Any) -> Any:
    """`value` with one change somewhere inside it: a value replaced, a key or item
    dropped, or one added (mostly deep inside: the top level is replaced less often)."""
    container = isinstance(value, (dict, list)) and len(value) > 0
    how = draw(st.sampled_from(["descend", "descend", "replace", "drop", "add"] if container else ["replace"]))
    if how == "replace":
        return draw(json_values)
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = draw(st.sampled_from(keys))
    copy = dict(value) if isinstance(value, dict) else list(value)
    if how == "descend":
        copy[key] = draw(mutated(value[key]))
    elif how == "drop":
        del copy[key]
    elif isinstance(copy, dict):
        copy[draw(st.text(max_size=8))] = draw(json_values)
    else:
        copy.insert(key, draw(json_values))
    return copy


def json_file(original: bytes) -> st.SearchStrategy[bytes]:
    mutation = mutated(json.loads(original)).map(lambda v: json.dumps(v).encode())
    return st.one_of(mutation, mutation, mutation, st.binary(max_size=64), st.text(max_size=64).map(str.encode))


SAME_SIZE = [["F32", "I32", "U32"], ["F16", "BF16", "I16", "U16"], ["F64", "I64", "U64"], ["BOOL", "U8", "I8", "F8_E4M3"]]


@st.composite
def consistent_header(draw, header: dict) -> dict:
    """A change that safetensors itself accepts (the bytes still add up): a tensor of another
    shape with as many numbers, of another type of the same size, under another name, or
    other metadata. Only mmcli's own checks can refuse these."""
    header = json.loads(json.dumps(header))
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    how = draw(st.sampled_from(["shape", "dtype", "name", "metadata"]))
    if how == "shape":
        n = 1
        for d in entry["shape"]:
            n *= d
        entry["shape"] = draw(st.sampled_from([[n], [1, n], [n, 1], list(reversed(entry["shape"])), []] if n == 1 else
                                              [[n], [1, n], [n, 1], list(reversed(entry["shape"]))]))
    elif how == "dtype":
        entry["dtype"] = draw(st.sampled_from(next((g for g in SAME_SIZE if entry["dtype"] in g), [entry["dtype"]])))
    elif how == "name":
        header[draw(st.text(min_size=1, max_size=12))] = header.pop(name)
    else:
        header["__metadata__"] = draw(st.dictionaries(st.sampled_from(["epoch", "format_version", "metric", "x"]),
                                                      st.text(max_size=8), max_size=3))
    return header


def safetensors_file(original: bytes) -> st.SearchStrategy[bytes]:
    """The header (JSON after an 8-byte length) changed, the tensors' bytes kept: changes
    safetensors accepts, any change, or a length that does not match."""
    n = struct.unpack("<Q", original[:8])[0]
    header, body = json.loads(original[8:8 + n]), original[8 + n:]

    def pack(args: tuple[Any, int | None]) -> bytes:
        text = json.dumps(args[0]).encode()
        return struct.pack("<Q", len(text) if args[1] is None else args[1]) + text + body
    lengths = st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=2**64 - 1))
    consistent = st.tuples(consistent_header(header), st.none()).map(pack)
    return st.one_of(consistent, consistent, st.tuples(mutated(header), lengths).map(pack), st.binary(max_size=64))


yaml_pieces = st.sampled_from(["&a ", "*a", "&b [*a, *a, *a]", "*b", "[", "]", "{", "}", ": ", "\n", "  ", "- ", "x",
                               "train", "lr", "1e9", ".nan", "-.inf", "!!binary aGk=", "<<: *a", "!!python/name:os.system",
                               "data", "image_size", "model", "? ", ",", "'", '"', "#", "%YAML 1.1\n", "---\n", "0x1F"])


def yaml_file(original: bytes) -> st.SearchStrategy[bytes]:
    mutation = mutated(yaml.safe_load(original)).map(lambda v: yaml.safe_dump(v).encode())
    return st.one_of(mutation, mutation,
                     st.lists(yaml_pieces, max_size=40).map(lambda p: "".join(p).encode()),
                     st.binary(max_size=64))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Path]:
    """A run trained for one epoch on a user's image, audio and text data (12 rows), small
    inputs and one thread: each example costs a load and one small forward pass."""
    import torch

    from mmcli.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("fuzzruns")
    manifest = write_own_manifest(folder / "own", n=12)
    small = ["--set", "data.image_size=16", "--set", "data.n_mels=16", "--set", "data.max_seconds=0.5"]
    result = CliRunner().invoke(app, ["train", str(manifest), "--epochs", "1", "--out", str(folder / "run"), "--quiet", *small])
    assert result.exit_code == 0, result.output
    before = {p.name: p.read_bytes() for p in (folder / "run").iterdir() if p.is_file()}
    yield folder / "run"
    torch.set_num_threads(threads)
    after = {p.name: p.read_bytes() for p in (folder / "run").iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # every example restored what it changed


def use(run_dir: Path) -> None:
    """What evaluate and predict do with a run: load it, predict one example, select and
    encode the test split of its own data."""
    from mmcli.inference import predict_records, records_from_dicts
    from mmcli.pipeline import data_for_run, load_run

    loaded = load_run(run_dir)
    own = run_dir.parent / "own"
    example = {"photo": "pics/p0.png", "sound": "clips/c0.wav", "caption": "a red cat"}
    predict_records(loaded, records_from_dicts(loaded, [example], own, "fuzz"), device="cpu")
    data_for_run(loaded, None, "test")


def fuzz_one_file(run: Path, name: str, content: bytes) -> None:
    path = run / name
    original = path.read_bytes()
    try:
        path.write_bytes(content)
        use(run)
    except MmcliError:
        pass
    finally:
        path.write_bytes(original)


def test_the_real_run_loads_and_predicts(run):
    use(run)  # the baseline every fuzzed case departs from


FILES = ["data.json", "labels.json", "target.json", "tokenizer-caption.json", "splits.json"]


@pytest.mark.parametrize("name", FILES)
def test_a_fuzzed_json_file_of_a_run_raises_only_mmcli_errors(run, name):
    @FUZZ
    @given(content=json_file((run / name).read_bytes()))
    def fuzz(content: bytes) -> None:
        fuzz_one_file(run, name, content)

    fuzz()


def test_a_fuzzed_config_yaml_of_a_run_raises_only_mmcli_errors(run):
    @FUZZ
    @given(content=yaml_file((run / "config.yaml").read_bytes()))
    def fuzz(content: bytes) -> None:
        fuzz_one_file(run, "config.yaml", content)

    fuzz()


def test_a_fuzzed_safetensors_header_raises_only_mmcli_errors(run):
    @FUZZ
    @given(content=safetensors_file((run / "best.safetensors").read_bytes()))
    def fuzz(content: bytes) -> None:
        fuzz_one_file(run, "best.safetensors", content)

    fuzz()


def test_a_fuzzed_config_file_raises_only_config_errors(run):
    """--config FILE: the YAML file a user (or a stranger) hands to any command."""
    from mmcli.config import resolve
    from mmcli.errors import ConfigError

    @FUZZ
    @given(content=yaml_file((run / "config.yaml").read_bytes()))
    def fuzz(content: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_bytes(content)
            try:
                resolve(path)
            except ConfigError:
                pass

    fuzz()


def test_the_real_run_still_loads_after_fuzzing(run):
    use(run)  # each example put the real file back