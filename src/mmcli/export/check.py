"""The check after an export: the written file against the run's own model, on real examples.

The examples are the first rows of the run's test split (or of `--data`, read as `mmcli
predict` reads a manifest), batched as mmcli batches them. The file is run on three
batches: the examples; the examples again with each modality alone and (with three or
more) each one missing, through the presence masks; and the first example alone, with
its own lengths (another batch size and padding than the export saw). Each output's
largest difference from the run's must stay within TOLERANCE times the larger of 1 and the
output's largest magnitude: 1e-4 for probabilities and unit embeddings, relative for
logits and values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from mmcli.data.dataset import Batch, Encoded, finish_batch, gather_batch
from mmcli.errors import DataError, MmcliError, UsageError

TOLERANCE = 1e-4
FAR = 1e30  # the difference recorded for a NaN or an infinity the run's output does not have


@dataclass
class Case:
    """One batch the export is checked on, as gathered (before normalisation)."""

    what: str
    stored: Batch
    masked: bool = False  # modalities hidden through the masks: every branch of the model takes its general path


def examples(run: Any, data: Path | None, n: int, cache_dir: str | None) -> tuple[Encoded, str]:
    """Up to `n` examples to check on, and where they come from."""
    if data is not None:
        from mmcli.inference import encode_records, records_from_manifest

        records = records_from_manifest(run, data)[:n]
        if not records:
            raise UsageError(f"{data}: has no rows to check the export on")
        return encode_records(run, records)[0], f"the first {len(records)} rows of {data}"
    rows = _own_rows(run, cache_dir)
    encoded = rows.encoded
    take = min(n, len(encoded))
    index = torch.arange(take)
    part = Encoded(encoded.ids[:take], {k: v[index] for k, v in encoded.inputs.items()},
                   {k: v[index] for k, v in encoded.lengths.items()}, {k: v[index] for k, v in encoded.present.items()},
                   None, encoded.kinds)
    return part, f"the first {take} examples of the run's {rows.split} split"


def _own_rows(run: Any, cache_dir: str | None) -> Any:
    """The run's test split (its validation or training split where that is empty)."""
    from mmcli.pipeline import data_for_run

    problem: Exception
    for split in ("test", "val", "train"):
        try:
            return data_for_run(run, None, split, cache_dir, require_label=False)
        except DataError as exc:
            if str(exc).endswith(f"the {split} split is empty") and split != "train":
                continue
            problem = exc
        except (MmcliError, OSError) as exc:
            problem = exc
        raise UsageError(f"cannot read the run's data to check the export on ({str(problem).splitlines()[0]}); "
                         "give a manifest of a few examples with --data") from None


def cases(encoded: Encoded, modalities: list[str], masks: bool) -> list[Case]:
    """The batches to check on (see the module's docstring); the second, where there is one,
    is also the example the export traces, since every branch takes its general path there."""
    rows = torch.arange(len(encoded))
    plain = gather_batch(encoded, rows)
    out = [Case(f"{len(rows)} examples", plain)]
    if masks and len(modalities) > 1:
        keep = [{m} for m in modalities] + ([set(modalities) - {m} for m in modalities] if len(modalities) > 2 else [])
        parts = [replace(plain, mask={n: plain.mask[n] & (n in k) for n in plain.mask}) for k in keep]
        out.append(Case("each modality alone" + (" and each one missing" if len(modalities) > 2 else ""), _cat(parts), True))
    if len(rows) > 1:
        out.append(Case("the first example alone", gather_batch(encoded, rows[:1])))
    return out


def _cat(parts: list[Batch]) -> Batch:
    first = parts[0]
    return Batch(inputs={n: torch.cat([p.inputs[n] for p in parts]) for n in first.inputs},
                 lengths={n: torch.cat([p.lengths[n] for p in parts]) for n in first.lengths},
                 mask={n: torch.cat([p.mask[n] for p in parts]) for n in first.mask},
                 index=torch.cat([p.index for p in parts]))


def tracing_example(stored: Batch) -> Batch:
    """A batch of at least two examples, each padded dimension at least two long: the capture
    would take a size of 1 for a constant."""
    if len(stored.index) < 2:
        stored = _cat([stored, stored])
    inputs = dict(stored.inputs)
    for name, x in inputs.items():
        if name in stored.lengths and x.shape[-1] < 2:
            inputs[name] = torch.nn.functional.pad(x.float(), (0, 1)).to(x.dtype)
    return replace(stored, inputs=inputs)


@torch.no_grad()
def reference(run: Any, stored: Batch, outputs: Callable[[Any, Batch], tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
    """The run's own answer: the batch normalised by `finish_batch`, through the model in fp32."""
    kinds_of = {n: s.kind for n, s in run.specs.items()}
    copy = Batch(inputs=dict(stored.inputs), lengths=dict(stored.lengths), mask=dict(stored.mask), index=stored.index)
    return [o.float() for o in outputs(run.model, finish_batch(copy, kinds_of, run.config.data))]


def compare(names: list[str], got: list[torch.Tensor], want: list[torch.Tensor], into: dict[str, dict]) -> None:
    """Fold one batch's differences into `into`: per output, the largest difference, the
    largest magnitude of the run's output, and the tolerance that follows. A NaN or an
    infinity where the run's output has another value counts as a difference of FAR."""
    for name, a, b in zip(names, got, want):
        if a.shape != b.shape:
            raise UsageError(f"the exported model's {name} has shape {list(a.shape)}, the run's {list(b.shape)}")
        finite = a.isfinite() & b.isfinite()
        diff = float((a - b)[finite].abs().max()) if bool(finite.any()) else 0.0
        entry = into.setdefault(name, {"max_abs_diff": 0.0, "largest_value": 0.0})
        if bool((~finite & ~((a == b) | (a.isnan() & b.isnan()))).any()):
            diff, entry["non_finite"] = FAR, True
        scale = float(b[b.isfinite()].abs().max()) if bool(b.isfinite().any()) else 0.0
        entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
        entry["largest_value"] = max(entry["largest_value"], scale)
        entry["tolerance"] = TOLERANCE * max(1.0, entry["largest_value"])
        entry["passed"] = entry["max_abs_diff"] <= entry["tolerance"]
