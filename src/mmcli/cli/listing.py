"""`mmcli list`: what is registered (encoders, fusions, tasks, variants)."""

from __future__ import annotations

import sys
from enum import Enum

import typer
from typing_extensions import Annotated

from mmcli.cli.common import handles_errors


class What(str, Enum):
    encoders = "encoders"
    fusions = "fusions"
    tasks = "tasks"
    variants = "variants"


@handles_errors
def list_cmd(what: Annotated[What, typer.Argument(help="encoders, fusions, tasks or variants.")]) -> None:
    """Print the registered names: a table on a terminal; in a pipe, one line each, name first
    (encoders: name, modality, where pretrained weights come from, description)."""
    rows = _rows(what)
    columns = ["name", "modality", "pretrained weights", "description"] if what is What.encoders else ["name", "description"]
    if sys.stdout.isatty():
        from mmcli.reporting.tables import show_table

        show_table(what.value, columns, rows, "table")
    else:
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")


def _rows(what: What) -> list[tuple[str, ...]]:
    if what is What.encoders:
        from mmcli.encoders import ENCODERS, PRETRAINED_TAGS

        def source(tags: tuple[str, ...]) -> str:
            return next((PRETRAINED_TAGS[t] for t in tags if t in PRETRAINED_TAGS), "no")

        return [(e.name, e.name.split(".")[0], source(e.tags), e.description) for e in ENCODERS.entries()]
    if what is What.fusions:
        from mmcli.fusion import FUSIONS

        return [(e.name, e.description) for e in FUSIONS.entries()]
    if what is What.tasks:
        from mmcli.heads import TASKS

        return [(e.name, e.description) for e in TASKS.entries()]
    from mmcli.fusion import DEFAULT_FUSIONS, FUSIONS

    rows: list[tuple[str, ...]] = [("unimodal", "family: one variant per modality of the data"),
            ("multimodal", f"family: {', '.join(DEFAULT_FUSIONS)} over all modalities, and ensemble beside every unimodal variant"),
            ("unimodal:<modality>", "one modality alone, e.g. unimodal:image"),
            ("multimodal:all", "every registered fusion over all modalities"),
            ("multimodal:ensemble", "the unimodal runs' predicted probabilities averaged (UME late fusion; trains nothing)"),
            ("subsets", "family: every non-empty subset of the modalities with model.fusion (for attribution)"),
            ("subset:<m1>+<m2>", "these modalities fused with model.fusion, e.g. subset:image+text"),
            ("crossmodal", "family: align, translate (once per source modality, beside its unimodal baseline), cross_attention"),
            ("crossmodal:align", "encoders aligned contrastively (train.align_epochs), then fused and fine-tuned"),
            ("crossmodal:translate:<m>", "MCTN-style: m translated into the others, predicting from m alone"),
            ("crossmodal:cross_attention", "all modalities fused with cross_attention (MulT)"),
            ("<item>@<encoder>[:<mode>]", "any item with another encoder for the modality of its kind, e.g. unimodal:image@mobilenet_v2:frozen "
             "(modes: frozen, finetuned, scratch)"),
            ("<item>@<m>=<encoder>[:<mode>],...", "encoders by modality, e.g. multimodal:concat@image=mobilenet_v2")]
    rows += [(f"multimodal:{name}", f"all modalities fused with {name}") for name in FUSIONS.names() if name != "identity"]
    return rows
