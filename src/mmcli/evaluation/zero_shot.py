"""Zero-shot classification with a retrieval run (Radford et al., 2021, CLIP, section 3.1):
each example of a labelled data set is scored against one text prompt per class ("a photo
of a {label}.") in the run's shared space, and its class is the nearest prompt's.

The run aligns a text modality with another (an image, a sound); with two OpenCLIP towers
and `model.task_options.projection=none` it is the pretrained model's own zero-shot
classifier (docs/crossmodal.md#zero-shot-baselines). `mmcli evaluate RUN --zero-shot DATA`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmcli import runs
from mmcli.errors import DataError, UsageError

DEFAULT_PROMPT = "a photo of a {label}."


def _sides(run: Any) -> tuple[str, str]:
    """(the text modality, the other one) of a retrieval run."""
    from mmcli.search import default_query_kind, query_modality

    if run.task.name != "retrieval":
        raise UsageError(f"--zero-shot needs a run trained with --task retrieval (this one is {run.task.name})")
    return query_modality(run, default_query_kind(run))


def _examples(run: Any, data: str, other: str, label: str, split: str | None) -> tuple[list[Any], list[str]]:
    """The records of `data` (the run's `other` modality only) and their labels."""
    from mmcli.data.manifest import read_manifest
    from mmcli.inference import records_from_dicts

    manifest = read_manifest(data)
    column = run.sources[other].column
    rows = [r for r in manifest.rows if split is None or r.get(run.config.data.split_column) == split]
    missing = [c for c in (column, label) if rows and c not in rows[0]]
    if missing or not rows:
        raise DataError(f"{manifest.path}: " + (f"no column {', '.join(repr(c) for c in missing)} (the run's {other} "
                                                f"and the label)" if missing else f"no rows{f' in split {split}' if split else ''}"))
    rows = [r for r in rows if (r.get(column) or "").strip() and (r.get(label) or "").strip()]
    records = records_from_dicts(run, [{other: r[column]} for r in rows], manifest.root, manifest.path.name)
    return records, [r[label].strip() for r in rows]


def zero_shot_scores(run_dir: Path, data: str, prompt: str = DEFAULT_PROMPT, label: str | None = None,
                     split: str | None = None, device: str = "auto", save: bool = True) -> dict[str, Any]:
    """Accuracy of the nearest prompt over `data`'s rows (of `split`, where given); every
    label of those rows is a class. Saved as zero-shot-<data>.json in the run folder."""
    from mmcli.pipeline import load_run
    from mmcli.search import embed

    if "{label}" not in prompt:
        raise UsageError(f"--prompt must hold {{label}} where the class name goes, as in '{DEFAULT_PROMPT}'")
    run = load_run(Path(run_dir))
    text, other = _sides(run)
    label = label or run.config.data.label
    records, truth = _examples(run, data, other, label, split)
    classes = sorted(set(truth))
    from mmcli.inference import records_from_dicts

    prompts = [prompt.replace("{label}", name) for name in classes]
    items = embed(run, records, device)[0][other]
    anchors = embed(run, records_from_dicts(run, [{text: p} for p in prompts], Path("."), "prompts"), device)[0][text]
    predicted = (items.float() @ anchors.float().t()).argmax(dim=1)
    target = torch.tensor([classes.index(t) for t in truth])
    hits = predicted == target
    scores: dict[str, Any] = {
        "task": "zero-shot classification", "accuracy": float(hits.float().mean()), "n_examples": len(truth),
        "n_classes": len(classes), "chance_accuracy": 1.0 / len(classes), "prompt": prompt, "data": str(data),
        "split": split or "all rows", "query": text, "gallery": other,
        "per_class_accuracy": {c: float(hits[target == i].float().mean()) for i, c in enumerate(classes)},
    }
    if save:
        name = f"zero-shot-{Path(data).stem}{f'-{split}' if split else ''}.json"
        runs.write_json(Path(run_dir) / name, scores)
        scores["saved_as"] = name
    return scores
