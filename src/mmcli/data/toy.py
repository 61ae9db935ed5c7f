"""Built-in toy data set: tiny image + audio + text examples for trying mmcli offline.

Each example's label is ``{colour}-{shape}-{size}`` (12 balanced classes), and the
information is deliberately split across modalities so that fusion clearly pays off:

* image: shape for sure, colour only ~80 % of the time (distractor colours), size never;
* text:  colour always, shape only "round vs. angular", size only 30 % of the time;
* audio: size only (pitch), nothing about shape or colour.

Best single-modality accuracy is therefore ~40 % (image), ~43 % (text), ~17 % (audio),
while a model that fuses all three can get close to 100 %.
Everything is generated deterministically from one seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from mmcli.data.recipes import write_manifest

COLOURS: tuple[str, ...] = ("red", "blue")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
TOY_CLASSES: list[str] = sorted(f"{c}-{s}-{z}" for c in COLOURS for s in SHAPES for z in SIZES)

IMAGE_SIZE = 64
SAMPLE_RATE = 16_000
MANIFEST_COLUMNS = ("id", "image", "audio", "text", "label")
CAPTION_COLUMNS = ("id", "image", "caption")
# each modality of the toy sets and its kind (the toy's columns are named after their kinds)
TOY_KINDS = {column: column for column in MANIFEST_COLUMNS[1:4]}
CAPTION_KINDS = {"image": "image", "caption": "text"}
CAPTIONS = "captions.csv"
PROGRESS_EVERY = 50

# RGB ranges (low, high) per channel. Label colours are what the text names; distractors
# never include the *other* label colour, so a distractor leaves the colour unknown
# rather than pointing to the wrong class.
_TRUE_RGB: dict[str, tuple[tuple[int, int], ...]] = {
    "red": ((200, 255), (0, 60), (0, 60)),
    "blue": ((0, 60), (0, 70), (200, 255)),
}
_DISTRACTOR_RGB: dict[str, tuple[tuple[int, int], ...]] = {
    "green": ((0, 60), (170, 240), (0, 60)),
    "yellow": ((220, 255), (210, 255), (0, 50)),
    "purple": ((120, 170), (0, 50), (150, 210)),
    "orange": ((235, 255), (120, 165), (0, 40)),
    "grey": ((200, 235), (200, 235), (200, 235)),  # light, to stay visible on the background
}
P_TRUE_COLOUR = 0.6

# Audio: pitch is the only signal and it encodes the size.
_PITCH_HZ = {"small": (900.0, 1600.0), "large": (150.0, 400.0)}
SNR_DB = 20.0

# Text vocabulary. Shape words are intentionally vague: squares and triangles share the
# same "angular" vocabulary so the caption cannot tell them apart.
_COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet", "ruby", "cherry-red", "reddish"),
    "blue": ("blue", "navy", "azure", "cobalt", "sky-blue", "bluish"),
}
_ROUND_ADJ = ("round", "roundish", "curved", "rounded", "smooth-edged")
_ROUND_WITH = ("with curved edges", "with a smooth outline", "with no corners at all")
_ANGULAR_ADJ = ("angular", "pointy-cornered", "sharp-cornered", "straight-edged", "edgy")
_ANGULAR_WITH = ("with straight edges", "with sharp corners", "with pointed corners")
_NOUNS = ("thing", "object", "shape", "figure", "form", "item", "mark")
_SIZE_WORDS = {
    "small": ("tiny", "little", "small", "smallish", "miniature"),
    "large": ("big", "huge", "large", "giant", "hefty"),
}
P_MENTION_SIZE = 0.3
_CONTEXTS = (
    " on a noisy background", ", drawn by hand", " in the middle of the picture",
    " against a grainy grey backdrop", " on a speckled canvas", " near the edge of the frame",
    ", slightly off-centre", " in a low-resolution snapshot",
)
_TEMPLATES = (
    "{np}{ctx}.",
    "Someone sketched {np}{ctx}.",
    "This picture shows {np}{ctx}.",
    "There is {np}{ctx}.",
    "Here we see {np}{ctx}.",
    "A photo of {np}{ctx}.",
    "The image contains {np}{ctx}.",
    "You can spot {np}{ctx}.",
    "Just {np}{ctx}, nothing else.",
    "An illustration featuring {np}{ctx}.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    # English article by first letter is good enough for this fixed vocabulary.
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def make_text(rng: np.random.Generator, colour: str, shape: str, size: str) -> str:
    """One varied caption: always names the colour, is vague on shape, rarely on size."""
    words: list[str] = []
    if rng.random() < P_MENTION_SIZE:
        words.append(_pick(rng, _SIZE_WORDS[size]))
    words.append(_pick(rng, _COLOUR_WORDS[colour]))
    round_shape = shape == "circle"
    noun = _pick(rng, _NOUNS)
    if rng.random() < 0.5:  # adjective form: "a crimson roundish thing"
        words += [_pick(rng, _ROUND_ADJ if round_shape else _ANGULAR_ADJ), noun]
    else:  # prepositional form: "a crimson thing with curved edges"
        words += [noun, _pick(rng, _ROUND_WITH if round_shape else _ANGULAR_WITH)]
    ctx = _pick(rng, _CONTEXTS) if rng.random() < 0.5 else ""
    text = _pick(rng, _TEMPLATES).format(np=_with_article(" ".join(words)), ctx=ctx)
    return text[0].upper() + text[1:]


def _background(rng: np.random.Generator) -> np.ndarray:
    """Grey-ish textured noise: smooth low-frequency blotches plus fine grain."""
    base = rng.uniform(70, 140)
    coarse = rng.normal(base, 25, size=(8, 8)).clip(0, 255).astype(np.uint8)
    blotches = np.asarray(
        Image.fromarray(coarse).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    tint = rng.normal(0, 6, size=3)  # slight colour cast so the background is not pure grey
    grain = rng.normal(0, 12, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    img = blotches[..., None] + tint + grain
    return img.clip(0, 255).astype(np.uint8)


def _shape_rgb(rng: np.random.Generator, colour: str) -> tuple[str, tuple[int, int, int]]:
    """The colour drawn (its name, and RGB): the label's colour or a distractor."""
    if rng.random() < P_TRUE_COLOUR:
        name = colour
        ranges = _TRUE_RGB[colour]
    else:
        name = _pick(rng, tuple(_DISTRACTOR_RGB))
        ranges = _DISTRACTOR_RGB[name]
    if ranges[0] == ranges[1] == ranges[2]:  # grey: keep the channels equal-ish
        v = int(rng.integers(ranges[0][0], ranges[0][1] + 1))
        return name, (v, v, v)
    return name, tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    # Vertices on a circle of radius r, so every shape fits the same bounding radius.
    starts = {"square": 45.0, "triangle": -90.0}
    count = {"square": 4, "triangle": 3}[shape]
    degs = starts[shape] + angle + np.arange(count) * 360.0 / count
    rad = np.deg2rad(degs)
    return [(cx + r * float(np.cos(a)), cy + r * float(np.sin(a))) for a in rad]


def make_image(rng: np.random.Generator, colour: str, shape: str) -> tuple[Image.Image, str]:
    """A 64x64 RGB picture of the shape (scale is independent of the size label), and a
    caption that describes exactly what was drawn (for the cross-modal tasks)."""
    img = Image.fromarray(_background(rng))
    draw = ImageDraw.Draw(img)
    r = float(rng.uniform(11, 22))  # same range for both sizes: the image says nothing on size
    cx = float(rng.uniform(r + 1, IMAGE_SIZE - r - 2))
    cy = float(rng.uniform(r + 1, IMAGE_SIZE - r - 2))
    drawn, fill = _shape_rgb(rng, colour)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, float(rng.uniform(-20, 20))), fill=fill)
    return img, describe(drawn, shape, r, cx, cy)


def describe(colour: str, shape: str, r: float, cx: float, cy: float) -> str:
    """'a big green triangle at the top left': the drawn colour, shape, scale and place."""
    def third(c: float) -> int:  # which third of the centres this radius allows
        return min(2, int(3 * (c - r - 1) / (IMAGE_SIZE - 2 * r - 3)))

    row, column = ("top", "middle", "bottom")[third(cy)], ("left", "centre", "right")[third(cx)]
    scale = "big" if r >= 16.5 else "small"
    return f"a {scale} {colour} {shape} at the {row} {column}"


def make_audio(rng: np.random.Generator, size: str) -> np.ndarray:
    """A noisy faded tone whose pitch encodes the size; float32 mono in [-1, 1]."""
    duration = rng.uniform(0.5, 0.9)
    n = int(round(duration * SAMPLE_RATE))
    onset = int(rng.uniform(0.02, 0.12) * SAMPLE_RATE)
    freq = rng.uniform(*_PITCH_HZ[size])
    amp = rng.uniform(0.3, 0.6)
    t = np.arange(n - onset) / SAMPLE_RATE
    tone = amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    fade = min(int(0.02 * SAMPLE_RATE), len(tone) // 2)  # 20 ms ramps avoid clicks
    ramp = np.linspace(0.0, 1.0, fade)
    tone[:fade] *= ramp
    tone[-fade:] *= ramp[::-1]
    wave = np.zeros(n)
    wave[onset:] = tone
    # White noise at ~SNR_DB relative to the tone's RMS (amp / sqrt 2).
    noise_std = amp / np.sqrt(2) / (10 ** (SNR_DB / 20))
    wave += rng.normal(0, noise_std, size=n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _balanced_labels(rng: np.random.Generator, n: int) -> list[str]:
    # Cycle through classes so counts differ by at most one, then shuffle the order.
    labels = [TOY_CLASSES[i % len(TOY_CLASSES)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(str(out))


def _write_example(out: Path, ex_id: str, label: str, rng: np.random.Generator) -> dict[str, str]:
    colour, shape, size = label.split("-")
    image_rel = f"images/{ex_id}.png"
    audio_rel = f"audio/{ex_id}.wav"
    image, caption = make_image(rng, colour, shape)
    image.save(out / image_rel, format="PNG")
    sf.write(out / audio_rel, make_audio(rng, size), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    text = make_text(rng, colour, shape, size)
    return {"id": ex_id, "image": image_rel, "audio": audio_rel, "text": text, "label": label, "caption": caption}


def make_toy(
    out: Path,
    n: int = 1200,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write n examples as files plus out/manifest.csv; return the manifest path."""
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    _check_out(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n)
    # One child seed per example, drawn up front from the single generator: each example
    # is then reproducible on its own, independent of how much randomness others used.
    child_seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    width = max(5, len(str(n - 1)))

    rows: list[dict[str, str]] = []
    for i in range(n):
        ex_rng = np.random.default_rng(int(child_seeds[i]))
        rows.append(_write_example(out, f"{i:0{width}d}", labels[i], ex_rng))
        done = i + 1
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == n):
            progress(done, n)
    # written last, atomically: an interrupted run never leaves a manifest of missing files;
    # captions.csv pairs each image with a caption of what it shows (retrieval, captioning)
    write_manifest(out, list(CAPTION_COLUMNS), [{k: row[k] for k in CAPTION_COLUMNS} for row in rows], CAPTIONS)
    return write_manifest(out, list(MANIFEST_COLUMNS), rows)
