"""preprocessing.json: how raw inputs become an exported model's tensors, without mmcli.

One recipe per modality kind, each saying exactly what mmcli's decoders do (mmcli.data.
decode, mmcli.data.text, mmcli.data.tabular) with the run's settings: the libraries and
calls, the sizes, what the model itself does (the kinds' normalisation is inside the
exported graph), how a batch is padded, and what an absent modality holds. A kind
whose class does not write a recipe (`ModalityKind.export_recipe`) cannot be exported, and its
`export_refusal` says why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mmcli.data.decode import SILENCE_DB, audio_frames
from mmcli.kinds import ModalityKind

FORMAT_VERSION = 1


def safe_name(name: str) -> str:
    """A modality's name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def refusal(kind: str) -> str | None:
    """Why a modality of `kind` cannot be exported (the kind's `export_refusal`), or None: the
    kind writes its own recipe (`ModalityKind.export_recipe`, which calls the functions below)."""
    from mmcli.kinds import KINDS

    own = type(KINDS[kind]).export_recipe is not ModalityKind.export_recipe
    return None if own else KINDS[kind].export_refusal


def image_recipe(run: Any, name: str, folder: Path) -> dict[str, Any]:
    d = run.config.data
    size = d.image_size
    return {
        "read": "the cell is an image file's path (a relative path starts at the manifest's folder)",
        "decode": "Pillow: Image.open(path); 16- and 32-bit grey images (modes I;16, I;16B, I;16L, I) scaled to "
                  "8 bits as x * 255 / max(x.max(), 1); images with transparency (RGBA, LA, PA, P with a "
                  "transparency key) composited over white with Image.alpha_composite; then Image.convert('RGB')",
        "resize": {"size": [size, size], "rule": "both sides to the size: the aspect ratio is not kept, nothing is cropped",
                   "exact": f"torchvision.transforms.v2.functional.resize(pixels, [{size}, {size}], antialias=True) on "
                            "the uint8 tensor [3, H, W] (bilinear, antialiased)",
                   "pillow": f"Image.resize(({size}, {size}), Image.BILINEAR) differs from it by at most 1 (of 255) in "
                             "some pixels; an image that is already that size is not changed by either"},
        "tensor": f"uint8 [batch, 3, {size}, {size}]: channels first (R, G, B), values 0..255",
        "inside_model": {"normalisation": "(x / 255 - mean) / std per channel", "mean": list(d.image_mean),
                         "std": list(d.image_std)},
        "absent": "zeros, with present false",
        "absent_value": 0,
    }


def text_recipe(run: Any, name: str, folder: Path) -> dict[str, Any]:
    tokenizer = run.tokenizers[name]
    file = f"tokenizer-{safe_name(name)}.json"
    (folder / file).write_text(tokenizer.to_str(), encoding="utf-8")
    pretrained = bool(getattr(tokenizer, "pretrained", False))
    max_len = run.config.data.text_max_len
    return {
        "read": "the cell is the text itself",
        "tokenizer": file,
        "library": "Hugging Face tokenizers: Tokenizer.from_file(tokenizer), then encode_batch(texts)",
        "normalisation": ("the model's own normaliser and pre-tokenizer, in the tokenizer file" if pretrained else
                          "in the tokenizer file: BERT's normaliser (lower-casing, accents stripped, control characters "
                          "removed, Chinese characters split) and pre-tokenizer (whitespace and punctuation), WordPiece"),
        "max_length": max_len,
        "truncation_and_padding": f"set in the tokenizer file: every text is cut to {max_len} tokens and padded to "
                                  f"{max_len} (id 0 is padding)",
        "pad_id": 0,
        "id_shift": 1 if pretrained else 0,
        "ids": ("(encoding.ids + 1) * encoding.attention_mask: the model's ids shifted by one, so that 0 is padding"
                if pretrained else "encoding.ids"),
        "lengths": "per text, the number of ids that are not 0, at least 1",
        "batch": "every row cut to the batch's longest length (the largest of its lengths), as mmcli batches them",
        "tensor": "int64 [batch, length]",
        "absent": "the empty text '' (all ids 0, length 1), with present false",
    }


def audio_recipe(run: Any, name: str, folder: Path) -> dict[str, Any]:
    import librosa

    d = run.config.data
    frames, cut = audio_frames(d), int(d.max_seconds * d.sample_rate)
    source = run.sources[name]
    recipe = {
        "read": "the cell is a sound file's path (a relative path starts at the manifest's folder)",
        "decode": "soundfile (libsndfile): SoundFile(path).read(frames=N, dtype='float32', always_2d=True) from the "
                  "start, with N = ceil(max_seconds * file_rate) + file_rate // 10 + 1 (a tenth of a second past the cut, "
                  "for the resampler), then the mean over channels (mono)",
        "max_seconds": d.max_seconds,
        "resample": f"where the file's rate is not {d.sample_rate}: librosa.resample(y, orig_sr=file_rate, "
                    f"target_sr={d.sample_rate}) (its default res_type, soxr_hq)",
        "cut": f"the first {cut} samples (int(max_seconds * sample_rate))",
        "mel": {"call": "librosa.feature.melspectrogram", "sr": d.sample_rate, "n_fft": d.n_fft,
                "hop_length": d.hop_length, "win_length": d.win_length, "window": d.window, "n_mels": d.n_mels,
                "center": True, "others": f"librosa's defaults (librosa {getattr(librosa, '__version__', '?')}): pad_mode constant, "
                                          "power 2.0, fmin 0, fmax sr / 2, Slaney mel scale and norm"},
        "db": {"call": "librosa.power_to_db", "ref": 1.0, "amin": 1e-10, "top_db": None, "clip": [SILENCE_DB, 40.0]},
        "frames": frames,
        "pad_value": SILENCE_DB,
        "pad": f"to {frames} frames with {SILENCE_DB:g} (silence); the length is min(frames computed, {frames})",
        "lengths": "per recording, its length in frames",
        "batch": "every example cut to the batch's longest length (the largest of its lengths), as mmcli batches them: "
                 "the convolutions see where a batch ends, so another padding changes the outputs slightly",
        "tensor": f"float32 [batch, {d.n_mels}, length] in dB",
        "inside_model": {"rounding": "to float16, as mmcli stores spectrograms", "normalisation": "(x + 40) / 40"},
        "absent": f"{SILENCE_DB:g} everywhere with length 1, with present false",
    }
    if source.start or source.end:
        recipe["window"] = (f"columns {source.start or '-'} (start) and {source.end or '-'} (end), in seconds: reading "
                            "starts at first = round(start * file_rate) and takes min(N, max(1, round(end * file_rate) "
                            "- first)) frames")
    return recipe


def tabular_recipe(run: Any, name: str, folder: Path) -> dict[str, Any]:
    codec = run.tokenizers[name]
    return {
        "read": "the cells of the columns below (numeric ones first, then categorical ones)",
        "columns": codec.numeric + codec.categorical,
        "numeric": [{"column": c, "mean": codec.stats[c][0], "std": codec.stats[c][1]} for c in codec.numeric],
        "categorical": [{"column": c, "values": codec.values[c]} for c in codec.categorical],
        "encode": "a numeric cell: (float(cell) - mean) / std, an empty cell 0; a categorical cell: 1 + the position of "
                  "its value in values, 0 for an empty or unseen value (cells are stripped of spaces first)",
        "tensor": f"float32 [batch, {len(codec.numeric) + len(codec.categorical)}]",
        "absent": "never: an empty cell is a missing value, encoded as above",
    }


def task_section(run: Any) -> dict[str, Any]:
    task = run.task
    out: dict[str, Any] = {"name": task.name}
    if task.name in ("classification", "multilabel"):
        out["labels"] = list(run.labels)
    if task.name == "multilabel":
        out["thresholds"] = [float(t) for t in task.thresholds(len(run.labels)).tolist()]
    if task.name == "regression":
        out |= {"target": run.config.data.label, "mean": task.state.get("mean", 0.0), "std": task.state.get("std", 1.0)}
    if task.name == "retrieval":
        out["similarity"] = "the dot product of two embeddings (unit vectors): their cosine"
    return out


def document(run: Any, fmt: str, graphs: list, files: dict[str, list[str]], folder: Path) -> dict[str, Any]:
    """The whole of preprocessing.json; writes the tokenizer files it names into `folder`."""
    from mmcli import __version__
    from mmcli.kinds import KINDS

    modalities = []
    for name in run.model.modalities:  # in the order of the models' inputs
        kind = run.specs[name].kind
        recipe = KINDS[kind].export_recipe(run, name, folder)
        assert recipe is not None, f"{kind}: refused before (refusal)"
        modalities.append({"name": name, "kind": kind, "column": run.columns[name]} | recipe)
    models = [{"file": files[g.stem][0], "files": files[g.stem], "modalities": g.modalities,
               "inputs": [s.as_dict() for s in g.slots],
               "outputs": [{"name": n, "meaning": m, "shape": g.output_shapes.get(n)} for n, m in g.outputs]}
              for g in graphs]
    calling = ("onnxruntime.InferenceSession(file).run(None, {input name: array})" if fmt == "onnx" else
               "torch.jit.load(file)(*tensors), the tensors in the order of inputs; it returns the outputs in order")
    return {"format_version": FORMAT_VERSION, "written_by": f"mmcli {__version__}", "format": fmt, "call": calling,
            "task": task_section(run), "models": models, "modalities": modalities,
            "batch": "examples are stacked along the first dimension; an example without a modality gives that "
                     "modality's 'absent' value and present false (a retrieval tower embeds only examples that have it)"}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
