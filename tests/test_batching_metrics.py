"""Batches pad text and audio only to their longest example; classification metrics
equal scikit-learn's."""

from __future__ import annotations

import pytest
import torch

from mmcli.config import DataConfig
from mmcli.data.dataset import Encoded, make_batch
from mmcli.heads.classification import classification_scores


def _encoded() -> Encoded:
    gen = torch.Generator().manual_seed(0)
    text = torch.zeros(4, 32, dtype=torch.long)
    text_len = torch.tensor([3, 7, 5, 2])
    for i, n in enumerate(text_len.tolist()):
        text[i, :n] = torch.randint(1, 50, (n,), generator=gen)
    audio = torch.randn(4, 8, 40, generator=gen).half()
    audio_len = torch.tensor([40, 11, 25, 6])
    return Encoded(ids=list("abcd"), inputs={"text": text, "audio": audio},
                   lengths={"text": text_len, "audio": audio_len},
                   present={"text": torch.ones(4, dtype=torch.bool), "audio": torch.ones(4, dtype=torch.bool)},
                   labels=torch.tensor([0, 1, 0, 1]), kinds={"text": "text", "audio": "audio"})


def test_batch_pads_to_its_longest_example_only():
    data, cfg = _encoded(), DataConfig()
    batch = make_batch(data, torch.tensor([0, 3]), cfg)
    assert batch["text"].shape == (2, 3)  # longest caption of the two has 3 tokens, not 32
    assert batch["audio"].shape == (2, 8, 40)
    batch = make_batch(data, torch.tensor([1, 3]), cfg)
    assert batch["text"].shape == (2, 7)
    assert batch["audio"].shape == (2, 8, 11)
    # nothing real is cut: the kept part equals the stored tensor
    assert torch.equal(batch["text"], data.inputs["text"][[1, 3], :7])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_scores_equal_scikit_learn(seed):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    gen = torch.Generator().manual_seed(seed)
    k = 5
    labels = torch.randint(0, k - 1, (60,), generator=gen)  # class 4 never true
    logits = torch.randn(60, k, generator=gen)
    logits[:, 3] -= 10  # class 3 never predicted
    names = [f"c{i}" for i in range(k)]
    got = classification_scores(logits, labels, names)
    pred, true = logits.argmax(1).numpy(), labels.numpy()
    assert got["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=list(range(k)), zero_division=0)
    for i, name in enumerate(names):
        assert got["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert got["confusion_matrix"]["matrix"] == confusion_matrix(true, pred, labels=list(range(k))).tolist()
