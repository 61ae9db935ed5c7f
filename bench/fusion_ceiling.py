"""How much can fusing an image and a text add on a data set? A ceiling measured with
strong models outside mmcli (issue 19: "fused at least 5 points above the name" on
mdi-icons).

    python bench/fusion_ceiling.py --data ../shared/data/mdi-icons/manifest.csv \\
        --weights ../shared/weights/mobilenet_v2-imagenet1k.pth [--image image --text name --label label] [--seeds 0,1,2]

Each seed draws mmcli's own stratified split (70/10/20; seed N is `data.split_seed=N`).
The text: a logistic regression on the words' counts (scikit-learn; every training word,
no length limit). The image: a logistic regression on the pooled features of MobileNetV2
with its ImageNet weights, frozen, at 224 pixels. Every regularisation strength, the
product-of-experts weight and the joint model's scale for the image block are chosen on
the validation split; the test split only scores. Printed per seed, test accuracy (%):

- text, image: each model alone;
- oracle: the share of test rows that either model gets right, the most that choosing
  between the two models' answers can reach;
- product: the two models' log-probabilities added, the image's weighted;
- joint: one logistic regression on the word counts and the image features together
  (early fusion: it can use what neither model alone uses).

Takes about 5 minutes for mdi-icons' 3,980 icons on 2 cores (the image features are
computed once per run).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

GRID_C = (0.01, 0.1, 1.0, 10.0, 100.0)
SCALES = (0.003, 0.01, 0.03, 0.1)
WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def image_features(paths: list[Path], weights: str) -> np.ndarray:
    import torch
    import torchvision
    from PIL import Image

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    t = torchvision.transforms
    prepare = t.Compose([t.Resize((224, 224)), t.ToTensor(), t.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), 64):
            batch = torch.stack([prepare(Image.open(p).convert("RGB")) for p in paths[i:i + 64]])
            out.append(model.features(batch).mean((2, 3)).numpy())
    return np.concatenate(out)


def fitted(x, y, train, val, grid=GRID_C):
    """The logistic regression whose strength scores best on the validation rows."""
    from sklearn.linear_model import LogisticRegression

    models = [LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train]) for c in grid]
    return max(models, key=lambda m: (m.predict(x[val]) == y[val]).mean())


def one_seed(texts, features, y, labels, seed: int) -> dict[str, float]:
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import StandardScaler

    from mmcli.data.splits import assign_splits

    split = np.array(assign_splits(labels, None, seed, 0.1, 0.2))
    train, val, test = split == "train", split == "val", split == "test"
    words = CountVectorizer(token_pattern=r"(?u)\b\w+\b").fit([t for t, s in zip(texts, train) if s]).transform(texts)
    image = StandardScaler().fit(features[train]).transform(features)
    text_model, image_model = fitted(words, y, train, val), fitted(image, y, train, val)
    log_t, log_i = (np.log(m.predict_proba(x) + 1e-12) for m, x in ((text_model, words), (image_model, image)))
    classes = text_model.classes_
    right = lambda scores, rows: classes[scores[rows].argmax(1)] == y[rows]  # noqa: E731
    w = max(WEIGHTS, key=lambda w: right(log_t + w * log_i, val).mean())
    joint, best = None, -1.0
    for scale in SCALES:  # the image block's scale against the counts', chosen on validation
        both = sparse.hstack([words, sparse.csr_matrix(image * scale)]).tocsr()
        model = fitted(both, y, train, val, (1.0, 10.0))
        if (model.predict(both[val]) == y[val]).mean() > best:
            joint, best = (model, both), (model.predict(both[val]) == y[val]).mean()
    assert joint is not None
    scores = {"text": right(log_t, test), "image": right(log_i, test)}
    scores["oracle"] = scores["text"] | scores["image"]
    scores["product"] = right(log_t + w * log_i, test)
    scores["joint"] = joint[0].predict(joint[1][test]) == y[test]
    return {k: 100 * float(v.mean()) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="manifest CSV")
    parser.add_argument("--weights", required=True, help="MobileNetV2 ImageNet weights (a torchvision state dict)")
    parser.add_argument("--image", default="image")
    parser.add_argument("--text", default="name")
    parser.add_argument("--label", default="label")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    with open(args.data, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    root = Path(args.data).parent
    features = image_features([root / r[args.image] for r in rows], args.weights)
    labels = [r[args.label] for r in rows]
    results = [one_seed([r[args.text] for r in rows], features, np.array(labels), labels, int(s))
               for s in args.seeds.split(",")]
    keys = list(results[0])
    print("| seed | " + " | ".join(keys) + " | best fusion - text |")
    print("|" + "---|" * (len(keys) + 2))
    for seed, r in zip(args.seeds.split(","), results):
        print(f"| {seed} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + f" | {max(r['product'], r['joint']) - r['text']:+.1f} |")
    mean = {k: np.mean([r[k] for r in results]) for k in keys}
    print("| mean | " + " | ".join(f"{mean[k]:.1f}" for k in keys) + " | |")


if __name__ == "__main__":
    main()
