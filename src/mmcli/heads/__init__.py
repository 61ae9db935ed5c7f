"""Task heads: each task is a head, its loss, its metrics and its prediction format.

A task is registered in `TASKS`; the training loop, evaluation, prediction and compare
only call the `Task` interface, so a new task is one new registered piece. A task also
owns its targets: how the manifest's label column becomes tensors (`names`, `encode`),
which rows are wrong (`check`), and the state it learns from the training split
(`fit_state`: class counts, a target's mean and std) or from validation (`after_fit`:
multi-label thresholds). That state is saved beside the weights as `target.json`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from mmcli.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

TASKS: Registry = Registry("task")


class Task(ABC):
    """What the core calls of a task (issue 21): the abstract methods every task writes,
    and the optional capabilities with explicit defaults (a task without classes has no
    class weights, a task without a prior has no baseline), so that nothing is probed with
    `hasattr`. Subclasses set the class attributes below."""

    name = ""
    default_metric = ""
    metrics: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ("loss",)
    stratify = False  # split per label value (classification) or at random
    needs_label = True  # the manifest must have the label column (cross-modal tasks: no)
    crossmodal = False  # retrieval, captioning: one modality mapped to or aligned with another
    options: dict[str, Any] = {}  # model.task_options this task reads, with their defaults
    has_classes: ClassVar[bool] = False  # train.class_weights and train.sampler=weighted apply (one class per example)
    beam_search: ClassVar[bool] = False  # predict --beam applies (captioning, transcription)
    text_output: ClassVar[str | None] = None  # the field of the text a model writes (captioning: caption)
    disjoint_labels: ClassVar[bool] = False  # splits share no label value (verification: identities held out)
    robustness_metric: ClassVar[str | None] = None  # evaluate --robustness's metric where the run's is lower-is-better
    length_percentile: ClassVar[float] = 95.0  # a derived length limit covers this share of the clips (mmcli.data.lengths)
    max_epochs: ClassVar[int | None] = None  # the most epochs a derived budget gives (None: training.setup.MAX_EPOCHS)
    rules: ClassVar[str | None] = None  # how it trains or keeps its epoch where no config key says (part of a run's fingerprint)

    def __init__(self, config=None, state: dict[str, Any] | None = None):
        self.config = config
        self.state: dict[str, Any] = dict(state or {})

    # targets -------------------------------------------------------------------------
    @abstractmethod
    def names(self, train_values: list[str]) -> list[str]:
        """The output names (class or label names; the target column for regression)."""

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        return {}

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        """(row index, reason) for every value this task cannot use."""
        return []

    def doubt(self, train_values: list[str]) -> str | None:
        """Why the training targets look meant for another task (said in a warning, and in
        the error where `check` finds unusable values), or None."""
        return None

    @abstractmethod
    def encode(self, values: list[str], names: list[str]):
        """The targets of `values` as the tensor the loss reads."""

    # training, scoring, predicting ----------------------------------------------------
    @abstractmethod
    def loss(self, outputs, batch: Batch):
        """The loss of a batch's outputs against its targets (batch["label"])."""

    @abstractmethod
    def evaluate(self, outputs, targets, names: list[str]) -> dict[str, Any]:
        """The task's metrics (and the loss) of outputs against targets."""

    def score(self, outputs, data, names: list[str]) -> dict[str, Any]:
        """The metrics of `outputs` on the rows of `data` (an Encoded): `evaluate` on its
        targets. Cross-modal tasks also read which rows share a source (data.sources): a
        photo's five caption rows are scored as one photo with five references."""
        return self.evaluate(outputs, data.labels, names)

    def validation_score(self, outputs, data, names: list[str]) -> dict[str, Any]:
        """The metrics of an epoch on the validation split, which the kept epoch is chosen
        by: `score`, unless what `after_fit` chooses there changes them (multilabel)."""
        return self.score(outputs, data, names)

    @abstractmethod
    def predict(self, outputs, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """One JSON object per example, as `mmcli predict` writes them."""

    def csv_table(self, predictions: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        """`predict --format csv`: the header and a row per prediction; by default the
        label and its score (classification), and the modalities each example used; a task
        that writes text (`text_output`), that text."""
        if self.text_output:
            field = self.text_output
            return ["id", field, "modalities_used"], [[p["id"], p[field], "|".join(p["modalities_used"])] for p in predictions]
        rows = [[p["id"], p["label"], f"{p['score']:.6f}", "|".join(p["modalities_used"])] for p in predictions]
        return ["id", "label", "score", "modalities_used"], rows

    def final_warnings(self, scores: dict[str, Any]) -> list[str]:
        """What `evaluate` and `train` say about a split's final scores (captioning: one
        caption for every photo); none by default."""
        return []

    def errors(self, outputs, targets, names: list[str], top_k: int) -> list[dict[str, Any]] | None:
        """`evaluate --errors`: the examples answered wrongly, worst first, each with its answer
        (as predict gives it) and the truth, in the order of `outputs`' rows as "row" (an index);
        None: the task has no wrong answer to list (retrieval, captioning)."""
        return None

    def showcase(self, outputs, data, names: list[str], n: int) -> list[dict[str, Any]]:
        """What `evaluate --plots` draws of the first `n` sources of `data` (an Encoded):
        retrieval's nearest items, captioning's captions (mmcli.reporting.showcase); none by default."""
        return []

    def set_beam(self, model, beam: int) -> None:
        """`predict --beam N` (tasks with `beam_search`: the head's `beam_size`)."""
        if self.beam_search:
            model.head.beam_size = beam
            return
        raise NotImplementedError(f"the {self.name} task has no beam search")

    # optional capabilities ------------------------------------------------------------
    def class_weights(self):
        """Weights of the classes in the loss (train.class_weights); None: not weighted."""
        return None

    def sample_weights(self, targets):
        """Sampling weight of each training example (train.sampler=weighted); tasks with `has_classes`."""
        raise NotImplementedError(f"the {self.name} task has no classes to balance")

    def prior_outputs(self, train_targets, n_outputs: int, n: int, metric: str | None = None):
        """Outputs of a model that sees nothing and predicts the training prior, for n
        examples: the baseline v(empty set) of modality attribution; None: no such baseline.
        `metric`: the one it is scored on, where the best such answer depends on it."""
        return None

    def check_state(self, where: str) -> None:
        """Refuse a saved state (target.json) this task cannot use; `where`: the run folder."""

    def n_outputs(self, names: list[str]) -> int:
        return len(names)

    def after_fit(self, outputs, targets, names: list[str]) -> dict[str, Any]:
        """State chosen on the validation split once training is over (default: none)."""
        return {}

    def average(self, outputs: list, weights: list[float] | None = None):
        """The late-fusion ensemble of models trained apart (compare's `multimodal:ensemble`):
        their outputs on the same rows combined into outputs `evaluate` reads, each member
        counted with its weight (`weights`, summing to 1; None: equal). None: this task has
        no ensemble."""
        return None

    def row_statistics(self, outputs, targets, metric: str):
        """For resampling the test split (`mmcli.compare.resample`): each row's statistics
        as an (n, k) array, and the function that makes `metric` of their means (..., k) ->
        (...). None where the metric is no function of row means (a ranking's)."""
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


def f1_statistics(tp, fp, fn):
    """Macro-F1 as a function of row means (`Task.row_statistics`): the rows' true
    positives, false positives and false negatives of each of k classes or labels, side by
    side (n, 3k), and the F1 of every class with any of them, averaged."""
    import numpy as np

    k = tp.shape[1]

    def macro_f1(m):
        t, p, n = m[..., :k], m[..., k:2 * k], m[..., 2 * k:]
        seen = 2 * t + p + n > 0
        f1 = np.divide(2 * t, 2 * t + p + n, out=np.zeros_like(t), where=seen)
        return np.divide((f1 * seen).sum(-1), seen.sum(-1), out=np.zeros(f1.shape[:-1]), where=seen.sum(-1) > 0)

    return np.concatenate([tp, fp, fn], axis=1), macro_f1


def mixed(stacked, weights: list[float] | None):
    """The members' outputs (stacked on the first dimension) averaged with `weights` (None: equal)."""
    if weights is None:
        return stacked.mean(dim=0)
    shares = stacked.new_tensor(weights).reshape(-1, *([1] * (stacked.dim() - 1)))
    return (stacked * shares).sum(dim=0)


def make_task(config, state: dict[str, Any] | None = None) -> Task:
    """The task of `config`, with the state a run saved (or none yet)."""
    return TASKS.get(config.model.task)(config, state)


def _register_builtins() -> None:
    from mmcli.heads import captioning, classification, multilabel, regression, retrieval, transcription, verification  # noqa: F401  (registration side effects)


_register_builtins()
