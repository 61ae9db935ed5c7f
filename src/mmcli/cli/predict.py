"""`mmcli predict`: apply a run to a manifest, to JSON lines on stdin, or to one example."""

from __future__ import annotations

import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import handles_errors
from mmcli.kinds import KINDS


def predict(
    run: Annotated[Path, typer.Argument(help="Run folder written by mmcli train (it may have been copied elsewhere).")],
    input: Annotated[Optional[str], typer.Argument(help="Manifest (CSV, TSV, JSONL) or '-' for JSON lines on stdin.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many labels to list with their probabilities.")] = 5,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one JSON object per example) or csv.")] = "jsonl",
    weights: Annotated[str, typer.Option("--weights", help="best or last.")] = "best",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps (not the device the run was trained on).")] = "auto",
    explain: Annotated[bool, typer.Option("--explain", help="Add each example's per-modality fusion weights (weighted, attention, gated, late fusions; null for others).")] = False,
    index: Annotated[Optional[Path], typer.Option("--index", help="Retrieval runs: the manifest whose items --query-* searches (embedded now), or a folder of mmcli index build; --top-k of them are listed per query.", show_default=False)] = None,
    embed: Annotated[bool, typer.Option("--embed", help="Write each example's embeddings (one vector per modality) instead of predictions; retrieval runs give the aligned unit vectors.")] = False,
    beam: Annotated[Optional[int], typer.Option("--beam", min=1, help="Captioning and transcription runs: beam width (1: greedy; default: the run's model.task_options.beam_size).", show_default=False)] = None,
    keep_columns: Annotated[bool, typer.Option("--keep-columns", help="Copy each example's input columns (or JSON fields) into its output row, before the answer; a column named like an answer's key is kept as input_NAME.")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="Predict the run's own train, val or test split (the rows its training recorded) instead of INPUT.", show_default=False)] = None,
    verify: Annotated[Optional[typing.Tuple[str, str]], typer.Option("--verify", help="Verification runs: A B, two examples (files, or JSON objects naming each modality's file); prints their cosine score and the same/different decision at the run's threshold.", show_default=False)] = None,
    enroll: Annotated[Optional[str], typer.Option("--enroll", help="Verification runs: a manifest whose rows (files and the identity column) become a gallery of identities, saved to --gallery.", show_default=False)] = None,
    identify: Annotated[Optional[str], typer.Option("--identify", help="Verification runs: a manifest, file or JSON object of probes; lists each probe's --top-k gallery identities by score.", show_default=False)] = None,
    gallery: Annotated[Optional[Path], typer.Option("--gallery", help="The gallery file --enroll writes and --identify reads (default: RUN/gallery.npz).", show_default=False)] = None,
    **by_kind: Any,
) -> None:
    """Predict labels or captions (one JSON object per example), search a retrieval run's index
    (--query-*), or write embeddings (--embed). JSON lines on stdin ('-') are answered as they
    arrive: each answer is written and flushed as soon as its line is read, so pipelines flow.
    Without an id, an example's id is the path of its first file (or its row number)."""
    from mmcli.errors import UsageError
    from mmcli.pipeline import load_run

    if fmt not in ("jsonl", "csv"):
        raise UsageError(f"--format must be jsonl or csv, not '{fmt}'")
    single = {k: by_kind.get(f"one_{k}") for k in _single_kinds()}
    _check_inputs(input, single, split)
    queries = {k: [str(v) for v in by_kind[f"query_{k}"]] for k in _query_kinds() if by_kind.get(f"query_{k}")}
    _check_modes(queries, index, embed, beam, explain, fmt)
    identity = {"--verify": verify, "--enroll": enroll, "--identify": identify, "--gallery": gallery}
    if any(v is not None for v in identity.values()):
        others = input is not None or split is not None or bool(queries) or embed or any(v is not None for v in single.values())
        others = others or explain or keep_columns or beam is not None or fmt != "jsonl"
        _write(_identity(run, weights, identity, others, top_k, device), fmt)
        return
    loaded = load_run(run, weights)
    if queries:
        _write(_search(loaded, queries, index, input, single, top_k, device), fmt)  # a ranked table of any task
        return
    task = loaded.task.name
    if beam is not None and not loaded.task.beam_search:
        raise UsageError(f"--beam is for captioning and transcription runs; this one is {task}")
    if task == "retrieval" and not embed:
        raise UsageError(f"a retrieval run searches ({_options(_query_kinds(), '--query-')} with --index DATA) "
                         "or writes embeddings (--embed); it has no labels to predict")
    if beam is not None:
        loaded.task.set_beam(loaded.model, beam)

    answer = _answerer(loaded, embed, keep_columns, top_k, explain, device)
    writer = _Writer("jsonl" if embed else fmt, None if embed else loaded.task.csv_table, keep_columns)
    if input == "-":
        for records in _stdin_records(loaded, keep_columns):
            writer.write(answer(records))
        return
    records = _split_records(loaded, split) if split is not None else _records(loaded, input, single)
    writer.write(answer(records))


def _check_inputs(input: Optional[str], single: dict, split: Optional[str]) -> None:
    from mmcli.errors import UsageError

    if input is not None and any(v is not None for v in single.values()):
        raise UsageError(f"give either INPUT or {_options(_single_kinds())}, not both")
    if split is not None and (input is not None or any(v is not None for v in single.values())):
        raise UsageError(f"--split predicts the run's own rows; give it without INPUT and {_options(_single_kinds())}")
    if split is not None and split not in ("train", "val", "test"):
        raise UsageError(f"--split must be train, val or test, not '{split}'")


def _identity(run: Path, weights: str, given: dict, others: bool, top_k: int, device: str) -> list[dict]:
    """--verify, --enroll then --identify (both may be given: enrol, then identify against it);
    `others`: whether another mode's input was given too."""
    from mmcli import gallery as gal
    from mmcli.errors import UsageError
    from mmcli.pipeline import load_run

    verify, enroll, identify, gallery = given["--verify"], given["--enroll"], given["--identify"], given["--gallery"]
    named = ", ".join(k for k, v in given.items() if v is not None)
    if others:
        raise UsageError(f"{named} answer in JSON lines and replace INPUT, --split, --embed, --query-*, --explain, "
                         "--keep-columns, --beam and --format csv; give one mode at a time")
    if verify is None and enroll is None and identify is None:
        raise UsageError("--gallery is the file of --enroll and --identify; give one of them")
    if verify is not None and (enroll is not None or identify is not None or gallery is not None):
        raise UsageError("--verify compares two examples; give it without --enroll, --identify and --gallery")
    loaded = load_run(run, weights)
    gal.check_run(loaded)
    if verify is not None:
        return [gal.verify(loaded, verify[0], verify[1], device)]
    path = gallery or gal.default_path(loaded)
    out = [gal.enroll(loaded, enroll, path, device)] if enroll is not None else []
    return out + (gal.identify(loaded, identify, path, top_k, device) if identify is not None else [])


def _answerer(loaded, embed: bool, keep_columns: bool, top_k: int, explain: bool, device: str):
    """records -> their answers: predictions, or embeddings (--embed)."""
    from mmcli.inference import predict_records, with_columns
    from mmcli.search import embedding_rows

    def answer(records: list) -> list[dict]:
        if not embed:
            return predict_records(loaded, records, top_k, explain, device, keep_columns)
        rows = embedding_rows(loaded, records, device)
        return [with_columns(rec, row) for rec, row in zip(records, rows)] if keep_columns else rows

    return answer


def _single_kinds() -> list[str]:
    """The kinds whose one example `predict --KIND VALUE` takes (mmcli.kinds: predict_option)."""
    return [k for k, kind in KINDS.items() if kind.predict_option]


def _query_kinds() -> list[str]:
    """The kinds a retrieval run can be searched with (`--query-KIND`)."""
    return [k for k, kind in KINDS.items() if kind.query_help]


def _options(names: list[str], prefix: str = "--") -> str:
    return "/".join(prefix + n for n in names)


def _kind_parameters() -> list[inspect.Parameter]:
    """`--KIND` for one example and `--query-KIND` for a search, for every kind that has them:
    a new modality kind brings its own options (mmcli.kinds)."""
    def option(name: str, value: Any, flag: str, help: str | None) -> inspect.Parameter:
        annotation = Annotated[Optional[value], typer.Option(flag, help=help, show_default=False)]  # type: ignore[valid-type]
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)

    one = [option(f"one_{k}", KINDS[k].value_type, f"--{k}", (KINDS[k].predict_option or ("", ""))[1])
           for k in _single_kinds()]
    query = [option(f"query_{k}", typing.List[KINDS[k].value_type], f"--query-{k}", KINDS[k].query_help)  # type: ignore[misc]
             for k in _query_kinds()]
    return one + query


def _signature() -> inspect.Signature:
    """predict's parameters with the kinds' options: the single-example ones after INPUT,
    the queries before --index, as the help lists them."""
    fixed = [p for p in inspect.signature(predict).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    hints = typing.get_type_hints(predict, include_extras=True)
    fixed = [p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY if p.default is not p.empty
                       and p.name != "input" else p.kind) for p in fixed]
    kinds = _kind_parameters()
    one, query = [p for p in kinds if p.name.startswith("one_")], [p for p in kinds if p.name.startswith("query_")]
    at = [p.name for p in fixed].index("index")
    return inspect.Signature(fixed[:2] + one + fixed[2:at] + query + fixed[at:])


predict.__signature__ = _signature()  # type: ignore[attr-defined]
predict = handles_errors(predict)


def _check_modes(queries: dict, index, embed: bool, beam, explain: bool, fmt: str) -> None:
    """Options that belong to different modes, refused before the run is loaded."""
    from mmcli.errors import UsageError

    if index is not None and not queries:
        raise UsageError(f"--index is the data a {_options(_query_kinds(), '--query-')} searches; give a query")
    if queries and (embed or beam is not None or explain):
        raise UsageError("--query-* searches; --embed, --beam and --explain belong to other modes")
    if embed and (beam is not None or explain or fmt != "jsonl"):
        raise UsageError("--embed writes JSON lines of vectors; --beam, --explain and --format csv do not apply")


def _search(loaded, queries: dict, index, input, single: dict, top_k: int, device: str) -> list[dict]:
    from mmcli.errors import UsageError
    from mmcli.search import search

    if len(queries) > 1:
        raise UsageError(f"give queries of one kind at a time ({_options(_query_kinds(), '--query-')})")
    if index is None:
        raise UsageError("--query-* searches a data set: give it with --index DATA (a manifest, or a folder of mmcli index build)")
    if input is not None or any(v is not None for v in single.values()):
        raise UsageError(f"--query-* and --index replace INPUT and {_options(_single_kinds())}; give one or the other")
    (kind, asked), = queries.items()
    return search(loaded, kind, asked, index, top_k, device)


def _stdin_lines(most: int):
    """Lines of stdin as (number, text), in lists: each list holds the lines that had already
    arrived when the one before was answered (at most `most`), so a slow writer gets each
    answer at once and a fast one gets batches. A thread reads; the caller predicts."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            number = 0
            while True:
                text = sys.stdin.readline()
                if not text:
                    break
                number += 1
                lines.put((number, text))
        finally:
            lines.put(None)

    threading.Thread(target=read, name="mmcli-stdin", daemon=True).start()
    ended = False
    while not ended:
        first = lines.get()
        if first is None:
            return
        batch = [first]
        while len(batch) < most:
            try:
                item = lines.get_nowait()
            except queue.Empty:
                break
            if item is None:
                ended = True
                break
            batch.append(item)
        yield batch


def _stdin_records(loaded, keep_columns: bool = False):
    """Records of JSON lines on stdin, a batch at a time (see _stdin_lines); a line that is not
    a JSON object is an error naming its number, after the lines before it were answered."""
    from mmcli.errors import BadRow, DataError
    from mmcli.inference import records_from_dicts

    for batch in _stdin_lines(max(1, loaded.config.eval.batch_size)):
        records = []
        for number, line in batch:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError("stdin: not JSON lines", [BadRow("stdin", None, None, f"line {number}: {exc.msg}")]) from None
            if not isinstance(obj, dict):
                raise DataError("stdin: not JSON lines", [BadRow("stdin", None, None, f"line {number}: not a JSON object")])
            records += records_from_dicts(loaded, [obj], Path.cwd(), "stdin", first=number, extra_fields=keep_columns)
        if records:
            yield records


def _split_records(loaded, split: str):
    """The rows of the run's own `split` (as evaluate scores them), read from its manifest."""
    from mmcli.inference import records_from_manifest
    from mmcli.pipeline import data_for_run, run_manifest

    chosen = data_for_run(loaded, None, split, require_label=False)
    for warning in chosen.warnings:
        from mmcli.reporting.console import log

        log(f"warning: {warning}")
    from mmcli.data.cache import cache_root
    from mmcli.data.preprocess import resolve_source
    from mmcli.data.table import is_table

    manifest = resolve_source(run_manifest(loaded), cache_root(None))  # the built-in toy set: its files
    if manifest.is_dir() and is_table(manifest):
        from mmcli.errors import UsageError

        raise UsageError(f"--split: the run was trained on a cache folder ({manifest}), whose files predict cannot "
                         f"read again; give the manifest instead as INPUT")
    id_col = loaded.config.data.id_column
    by_key = {rec.columns.get(id_col) or str(rec.row): rec for rec in records_from_manifest(loaded, manifest)}
    return [by_key[key] for key in chosen.table.ids if key in by_key]


def _records(loaded, input: Optional[str], single: dict):
    from mmcli.errors import UsageError
    from mmcli.inference import records_from_dicts, records_from_manifest

    if input is not None:
        return records_from_manifest(loaded, Path(input))
    given = {}
    for kind, value in single.items():
        if value is None:
            continue
        names = [n for n, s in loaded.specs.items() if s.kind == kind]
        if not names:
            raise UsageError(f"--{kind}: this run has no {kind} modality (it reads: {', '.join(loaded.specs)})")
        given[names[0]] = str(value)
    if not given:
        raise UsageError(f"nothing to predict: give INPUT, '-' for stdin, or {_options(_single_kinds())}")
    return records_from_dicts(loaded, [{"id": "1", **given}], Path.cwd(), "command line")


class _Writer:
    """Answers to stdout as they come: JSON lines, or CSV (the task's table, `Task.csv_table`,
    or every key of the rows, as a search's ranked results), its header once; flushed after
    each batch so that a pipeline reads each answer when it is made."""

    def __init__(self, fmt: str, table=None, keep_columns: bool = False) -> None:
        import csv

        self.fmt, self.table, self.keep = fmt, table, keep_columns
        self.header: list[str] | None = None
        self.csv = csv.writer(sys.stdout, lineterminator="\n")

    def write(self, predictions: list[dict]) -> None:
        if self.fmt == "jsonl":
            for p in predictions:
                sys.stdout.write(json.dumps(p, ensure_ascii=False) + "\n")
        elif predictions:
            self._csv(predictions)
        sys.stdout.flush()

    def _csv(self, predictions: list[dict]) -> None:
        if self.table is None:
            header, rows = list(predictions[0]), [list(p.values()) for p in predictions]
        else:
            header, rows = self.table(predictions)
            if self.keep:  # the kept input columns before the task's own
                own = [k for k in predictions[0] if k not in header and k not in _ANSWER_KEYS]
                header, rows = own + header, [[p.get(k, "") for k in own] + row for p, row in zip(predictions, rows)]
        if self.header is None:
            self.header = header
            self.csv.writerow(header)
        self.csv.writerows(rows)


# keys of an answer that the CSV table of a task leaves out (not input columns)
_ANSWER_KEYS = {"probabilities", "scores", "top", "modality_weights", "modalities_used"}


def _write(predictions: list[dict], fmt: str, table=None) -> None:
    _Writer(fmt, table).write(predictions)
