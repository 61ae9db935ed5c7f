"""`mmcli export`: a run's model as ONNX or TorchScript, to deploy without mmcli.

A fused run (classification, multi-label, regression) becomes one model that takes each
modality's tensors and presence mask and gives the task's outputs; a retrieval run
becomes one model per tower, each giving its modality's unit embedding. Beside them,
preprocessing.json says exactly how raw inputs become those tensors (mmcli.export.
recipes) and export.json what was written and how the check went: the written files are
run again (onnxruntime, torch.jit.load) on a few examples and compared with the run's own
model (mmcli.export.check). A failed check is a RunFailed (exit 1) with the numbers; what
cannot be exported (captioning's decoding loop, video's decoding, a model the exporter
cannot capture) is a UsageError (exit 2) that says why.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from mmcli.errors import RunFailed, UsageError

FORMATS = ("onnx", "torchscript")
EXPORTERS = {"onnx": "torch.onnx.export(dynamo=True): torch.export, then onnxscript", "torchscript": "torch.jit.trace"}
TASKS = ("classification", "multilabel", "regression", "retrieval")
CAPTIONING = ("a {task} run writes text word by word with a decoder and a search over what it has written (greedy or "
              "beam search): a loop that depends on its own outputs, which export does not trace; mmcli predict writes "
              "its captions")


def export_run(run_dir: Path, fmt: str, out: Path, weights: str = "best", data: Path | None = None,
               n_examples: int = 8, overwrite: bool = False, cache_dir: str | None = None) -> dict[str, Any]:
    """Export the run at `run_dir` into `out`, check it; the summary that export.json holds."""
    from mmcli.export import check, formats, outdir, recipes
    from mmcli.export.graph import tensors_for
    from mmcli.pipeline import load_run

    if fmt not in FORMATS:
        raise UsageError(f"--format must be onnx or torchscript, not '{fmt}'")
    if weights not in ("best", "last"):
        raise UsageError(f"--weights must be best or last, not '{weights}'")
    formats.require(fmt)
    old = outdir.check(out, overwrite)
    run = load_run(run_dir, weights)
    _refuse(run)
    encoded, source = check.examples(run, data, n_examples, cache_dir)
    cases = check.cases(encoded, run.model.modalities, run.task.name != "retrieval")
    graphs = _graphs(run, cases[0].stored)
    example = check.tracing_example(next((c for c in cases if c.masked), cases[0]).stored)
    results: dict[str, dict] = {}
    with outdir.staging(out) as folder:
        files: dict[str, list[str]] = {}
        for g in graphs:
            written = formats.write(fmt, g, tensors_for(example, g.slots), folder)
            files[g.stem] = [p.name for p in written]
            results[files[g.stem][0]] = _check(run, g, formats.Runner(fmt, written[0]), cases)
        (folder / "preprocessing.json").write_text(recipes.dumps(recipes.document(run, fmt, graphs, files, folder)),
                                                   encoding="utf-8")
        record = _record(run, fmt, weights, sorted(p.name for p in folder.iterdir()), source, cases, results)
        if fmt == "onnx":
            record["onnx_opset"] = formats.opset(folder / next(iter(results)))
        (folder / outdir.RECORD).write_text(recipes.dumps(record), encoding="utf-8")
        outdir.place(folder, out, old)
    summary = _summary(out, fmt, list(results), record)
    if not record["check"]["passed"]:
        raise RunFailed(f"the exported model's {summary['output']} differs from the run's by up to "
                        f"{summary['max_abs_diff']:.3g} (tolerance {summary['tolerance']:.3g}) on {source}; the files "
                        f"are in {out}, and {out / outdir.RECORD} has every difference")
    return summary


def _refuse(run: Any) -> None:
    """What cannot be exported, refused before anything is written."""
    from mmcli.export.recipes import refusal

    task = run.task.name
    if task not in TASKS:
        why = CAPTIONING.format(task=task) if run.task.beam_search else f"export knows the outputs of {', '.join(TASKS)} runs"
        raise UsageError(f"cannot export a {task} run: {why}")
    for name, spec in run.specs.items():
        reason = refusal(spec.kind)
        if reason is not None:
            raise UsageError(f"cannot export modality '{name}' ({spec.kind}): {reason}")


def _graphs(run: Any, stored: Any) -> list:
    """The modules to export: one for a fused task, one per tower for retrieval."""
    from mmcli.export.graph import Graph, Predictor, Tower, slots_for, task_outputs, tower_reference
    from mmcli.export.recipes import safe_name

    kinds_of = {n: s.kind for n, s in run.specs.items()}
    model, data = run.model.cpu().eval().requires_grad_(False), run.config.data  # outputs without autograd history
    if run.task.name != "retrieval":
        outputs, fn = task_outputs(run.task)
        slots = slots_for(stored, kinds_of, model.modalities)
        return [Graph("model", Predictor(model, slots, kinds_of, data, fn), model.modalities, slots, outputs,
                      lambda m, batch: fn(m(batch)))]
    graphs: list = []
    stems: set[str] = set()
    for name in model.modalities:
        slots = slots_for(stored, kinds_of, [name], present=False)
        stem = f"tower-{safe_name(name)}"
        stem = stem if stem not in stems else f"{stem}-{len(stems) + 1}"
        stems.add(stem)
        embedding = [("unit_embedding", f"the unit vector of {name} in the space both towers share (as predict --embed)")]
        graphs.append(Graph(stem, Tower(model, name, slots, kinds_of, data), [name], slots, embedding,
                            functools.partial(tower_reference, name=name)))
    return graphs


def _check(run: Any, g: Any, runner: Any, cases: list) -> dict[str, dict]:
    """Every output of one exported file against the run's, over the check's batches."""
    from mmcli.export import check
    from mmcli.export.graph import tensors_for

    if runner.fmt == "onnx":  # the inputs the file has (an exporter may leave out one nothing reads)
        g.slots = [s for s in g.slots if s.name in runner.names]
    outputs: dict[str, dict] = {}
    for case in cases:
        got = runner.run([s.name for s in g.slots], tensors_for(case.stored, g.slots))
        check.compare([n for n, _ in g.outputs], got, check.reference(run, case.stored, g.reference), outputs)
        g.output_shapes = {n: ["batch", *o.shape[1:]] for (n, _), o in zip(g.outputs, got)}
    return outputs


def _record(run: Any, fmt: str, weights: str, files: list[str], source: str, cases: list,
            results: dict[str, dict]) -> dict[str, Any]:
    """export.json: what was written, by what, and the check's numbers."""
    from mmcli.export import check, formats
    from mmcli.export.outdir import RECORD

    notes = []
    precision = run.config.train.precision
    if precision != "fp32":
        notes.append(f"the run trained in {precision}: mmcli predict runs it under {precision} autocast, the export in "
                     "fp32 with the same weights; the check compares with the run's model in fp32")
    passed = all(o["passed"] for outputs in results.values() for o in outputs.values())
    return {"format": fmt, "exporter": EXPORTERS[fmt], "versions": formats.versions(fmt), "run": str(run.path),
            "weights": weights, "files": files + [RECORD],
            "check": {"examples": source, "batches": [c.what for c in cases],
                      "tolerance": f"max |exported - run| <= {check.TOLERANCE:g} * max(1, max |run|), per output",
                      "models": results, "passed": passed},
            "notes": notes}


def _summary(out: Path, fmt: str, models: list[str], record: dict[str, Any]) -> dict[str, Any]:
    """One line for stdout: the files, and the output that came nearest its tolerance."""
    worst = max(((name, o) for outputs in record["check"]["models"].values() for name, o in outputs.items()),
                key=lambda item: item[1]["max_abs_diff"] / max(item[1]["tolerance"], 1e-300))
    return {"out": str(out), "format": fmt, "models": models, "examples": record["check"]["examples"],
            "output": worst[0], "max_abs_diff": worst[1]["max_abs_diff"], "tolerance": worst[1]["tolerance"],
            "passed": record["check"]["passed"]}
