"""Task heads: each task is a head, its loss, its metrics and its prediction format.

A task is registered in `TASKS`; the training loop, evaluation, prediction and compare
only call the `Task` interface, so a new task is one new registered piece. A task also
owns its targets: how the manifest's label column becomes tensors (`names`, `encode`),
which rows are wrong (`check`), and the state it learns from the training split
(`fit_state`: class counts, a target's mean and std) or from validation (`after_fit`:
multi-label thresholds). That state is saved beside the weights as `target.json`.
"""

from __future__ import annotations

from typing import Any

from mmcli.registry import Registry

TASKS: Registry = Registry("task")


class Task:
    """The defaults every task shares; subclasses set the class attributes below."""

    name = ""
    default_metric = ""
    metrics: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ("loss",)
    stratify = False  # split per label value (classification) or at random
    needs_label = True  # the manifest must have the label column (cross-modal tasks: no)
    crossmodal = False  # retrieval, captioning: one modality mapped to or aligned with another
    options: dict[str, Any] = {}  # model.task_options this task reads, with their defaults

    def __init__(self, config=None, state: dict[str, Any] | None = None):
        self.config = config
        self.state: dict[str, Any] = dict(state or {})

    # targets -------------------------------------------------------------------------
    def names(self, train_values: list[str]) -> list[str]:
        """The output names (class or label names; the target column for regression)."""
        raise NotImplementedError

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        return {}

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        """(row index, reason) for every value this task cannot use."""
        return []

    def encode(self, values: list[str], names: list[str]):
        raise NotImplementedError

    def n_outputs(self, names: list[str]) -> int:
        return len(names)

    def after_fit(self, outputs, targets, names: list[str]) -> dict[str, Any]:
        """State chosen on the validation split once training is over (default: none)."""
        return {}

    def average(self, outputs: list):
        """The late-fusion ensemble of models trained apart (compare's `multimodal:ensemble`):
        their outputs on the same rows combined into outputs `evaluate` reads. None: this
        task has no ensemble."""
        return None

    def split_keys(self, values: list[str]) -> list[str]:
        return list(values) if self.stratify else [""] * len(values)

    # cross-modal tasks ---------------------------------------------------------------
    def adapt_config(self, config, kinds: dict[str, str]):
        """The config this task trains with, given the data's modality kinds (name -> kind);
        cross-modal tasks choose their modalities and target column here."""
        return config

    def target_values(self, table) -> list[str] | None:
        """The strings `names`, `check` and `encode` read: the label column by default."""
        return table.labels

    def build_model_head(self, in_dims: dict[str, int], n_outputs: int, config):
        """A head that reads every encoder's output itself, in place of fusion + head, called
        as head(features, mask, batch); None: the usual fusion and `build_head`."""
        return None

    def option(self, key: str):
        """model.task_options[key], or this task's default."""
        given = dict(self.config.model.task_options) if self.config is not None else {}
        return given.get(key, self.options[key])

    def check_options(self) -> None:
        from mmcli.errors import ConfigError

        given = dict(self.config.model.task_options) if self.config is not None else {}
        unknown = [k for k in given if k not in self.options]
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ConfigError(f"config key 'model.task_options.{unknown[0]}': the {self.name} task has no such option "
                              f"(it has: {known})")


def make_task(config, state: dict[str, Any] | None = None) -> Task:
    """The task of `config`, with the state a run saved (or none yet)."""
    return TASKS.get(config.model.task)(config, state)


def _register_builtins() -> None:
    from mmcli.heads import captioning, classification, multilabel, regression, retrieval  # noqa: F401  (registration side effects)


_register_builtins()
