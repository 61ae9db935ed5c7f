"""`mmcli datasets`: list the recipes, make the toy set, get public data sets, import folders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import typer
from typing_extensions import Annotated

from mmcli.kinds import KINDS
from mmcli.cli.common import QuietOpt, handles_errors, set_quiet

app = typer.Typer(help="Data sets: list the recipes, make the toy set, get public ones, import your folders.",
                  no_args_is_help=True)
make_app = typer.Typer(help="Generate a built-in data set as files plus manifest.csv.", no_args_is_help=True)
get_app = typer.Typer(help="Download a public data set (checksums verified) or build it from a local copy "
                           "(--source), as files plus manifest.csv.", no_args_is_help=True)
import_app = typer.Typer(help="Write a manifest for a layout you already have; your files stay where they are.",
                         no_args_is_help=True)
app.add_typer(make_app, name="make")
app.add_typer(get_app, name="get")
app.add_typer(import_app, name="import")

OutArg = Annotated[Path, typer.Argument(help="Folder to write (must not exist or be empty); it appears only when complete.")]
SourceOpt = Annotated[Optional[Path], typer.Option(
    "--source", help="Build from this local copy instead of downloading (a folder laid out as ../shared/data, "
                     "or the data set's own folder).", show_default=False)]
MirrorOpt = Annotated[Optional[str], typer.Option(
    "--mirror", help="Download from this base URL (a local mirror) instead of the data set's home; "
                     "the same checksums apply.", show_default=False)]
ImportOutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Manifest to write, in DIR or a folder above it (default: DIR/manifest.csv); never overwritten.",
    show_default=False)]


@app.command("list")
@handles_errors
def list_datasets() -> None:
    """Show every data set recipe with its modalities, size, license and source."""
    from mmcli.data.recipes import RECIPES
    from mmcli.reporting.tables import show_table

    rows = [(r.name, r.modalities, r.size, r.license, r.source, r.what) for r in RECIPES.values()]
    show_table("data sets", ["name", "modalities", "size", "license", "source", "what"], rows)


@make_app.command("toy")
@handles_errors
def make_toy(
    out: OutArg,
    n: Annotated[int, typer.Option("--n", min=12, help="Number of examples.")] = 1200,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same files.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Generate the toy image + audio + text set: PNG, WAV, captions and manifest.csv."""
    from mmcli.data.toy import make_toy as make
    from mmcli.errors import UsageError
    from mmcli.reporting.console import log, task_bar

    set_quiet(quiet)
    try:
        with task_bar("making toy data") as update:
            manifest = make(out, n=n, seed=seed, progress=update)
    except FileExistsError:
        raise UsageError(f"{out}: exists and is not empty; choose another folder") from None
    log(f"wrote {n} examples to {out}")
    typer.echo(str(manifest))


def _get(name: str, out: Path, quiet: bool, build: Callable[..., int]) -> None:
    from mmcli.reporting.console import log, task_bar

    set_quiet(quiet)
    with task_bar(f"getting {name}") as update:
        n = build(progress=update)
    log(f"wrote {n:,} examples to {out} (manifest.csv; recipe.json says where they came from)")
    typer.echo(str(out / "manifest.csv"))


@get_app.command("fsdd")
@handles_errors
def get_fsdd(
    out: OutArg,
    source: SourceOpt = None,
    mirror: MirrorOpt = None,
    holdout_speaker: Annotated[Optional[str], typer.Option(
        "--holdout-speaker", help="Test on this speaker's clips and train on the others' "
                                  "(default: the usual split, takes 0-4 of everyone are the test set).",
        show_default=False)] = None,
    target: Annotated[str, typer.Option(
        "--target", help="What `label` holds: digit (the spoken digit) or speaker (who speaks it, for speaker "
                         "verification; then no split column, so the task draws speaker-disjoint splits).")] = "digit",
    quiet: QuietOpt = False,
) -> None:
    """Free Spoken Digit Dataset: 3,000 spoken digits (audio), 6 speakers."""
    from mmcli.data.recipes.api import get_fsdd as get

    _get("fsdd", out, quiet, lambda progress: get(out, source, mirror, holdout_speaker, progress, target=target))


@get_app.command("mnist")
@handles_errors
def get_mnist(out: OutArg, source: SourceOpt = None, mirror: MirrorOpt = None, quiet: QuietOpt = False) -> None:
    """MNIST handwritten digits (image); the test set alone when only that is present."""
    from mmcli.data.recipes.api import get_mnist as get

    _get("mnist", out, quiet, lambda progress: get(out, source, mirror, progress))


@get_app.command("avmnist")
@handles_errors
def get_avmnist(
    out: OutArg,
    source: Annotated[Optional[Path], typer.Option(
        "--source", help="A folder holding mnist/ and fsdd/ laid out as in ../shared/data "
                         "(default: download both).", show_default=False)] = None,
    mirror: MirrorOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pairing, the image split and the noise.")] = 0,
    energy_removed: Annotated[float, typer.Option(
        "--energy-removed", min=0.0, max=0.99, help="Share of the images' PCA energy (variance) to remove; the fewest leading components that keep at least the rest are kept.")] = 0.75,
    snr_db: Annotated[float, typer.Option(
        "--snr-db", help="Signal-to-noise ratio of the audio in dB (white noise; 'inf' for none).")] = -8.0,
    n: Annotated[Optional[int], typer.Option(
        "--n", min=20, help="Number of pairs (default: one per MNIST image found, 10,000 for the test set).",
        show_default=False)] = None,
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", min=0.01, max=0.9, help="Share of the images (per digit) paired with FSDD's test takes.")] = 0.15,
    quiet: QuietOpt = False,
) -> None:
    """AV-MNIST: MNIST digits paired with spoken digits (image + audio), both degraded."""
    from mmcli.data.recipes.api import get_avmnist as get
    from mmcli.errors import UsageError

    if math.isnan(snr_db):
        raise UsageError("--snr-db: not a number")
    _get("avmnist", out, quiet, lambda progress: get(
        out, source, mirror, progress, seed=seed, energy_removed=energy_removed, snr_db=snr_db, n=n,
        test_fraction=test_fraction))


def _moving_mnist(name: str, av: bool):
    """`datasets get moving-mnist` and `av-moving-mnist`: the same options, the second with FSDD's sound."""

    def command(
        out: OutArg,
        source: Annotated[Optional[Path], typer.Option(
            "--source", help="A folder holding mnist/ (and fsdd/ for av-moving-mnist) laid out as in ../shared/data "
                             "(default: download).", show_default=False)] = None,
        mirror: MirrorOpt = None,
        n: Annotated[int, typer.Option("--n", min=10, help="Number of clips.")] = 1000,
        frames: Annotated[int, typer.Option("--frames", min=2, help="Frames per clip.")] = 16,
        size: Annotated[int, typer.Option("--size", min=28, help="Frame width and height in pixels (even).")] = 64,
        fps: Annotated[int, typer.Option("--fps", min=1, help="Frames per second of the files.")] = 8,
        digits: Annotated[int, typer.Option("--digits", min=1, max=3, help="Digits per clip (more than one: a multilabel target).")] = 1,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the digits, their motion, the split and the noise.")] = 0,
        energy_removed: Annotated[Optional[float], typer.Option(
            "--energy-removed", min=0.0, max=0.99, help="Share of the digit images' PCA energy removed (default: 0, "
            "or 0.75 for av-moving-mnist, as AV-MNIST).", show_default=False)] = None,
        snr_db: Annotated[float, typer.Option("--snr-db", help="av-moving-mnist: signal-to-noise ratio of the "
                                              "spoken digit in dB (white noise; 'inf' for none).")] = -8.0,
        quiet: QuietOpt = False,
    ) -> None:
        from mmcli.data.recipes.api import get_moving_mnist as get
        from mmcli.errors import UsageError

        if math.isnan(snr_db):
            raise UsageError("--snr-db: not a number")
        if size % 2:
            raise UsageError(f"--size must be even (video codecs need it), not {size}")
        options: dict = {"n": n, "frames": frames, "size": size, "fps": fps, "digits_per_clip": digits, "seed": seed,
                         "av": av}
        if energy_removed is not None:
            options["energy_removed"] = energy_removed
        if av:
            options["snr_db"] = snr_db
        _get(name, out, quiet, lambda progress: get(out, source, mirror, progress, **options))

    command.__doc__ = ("Moving MNIST with each clip's digit spoken in its sound track (video + audio from one file), "
                       "both degraded as AV-MNIST." if av else "Moving MNIST: digits moving in short video clips (MP4).")
    get_app.command(name)(handles_errors(command))


_moving_mnist("moving-mnist", av=False)
_moving_mnist("av-moving-mnist", av=True)


@get_app.command("coco-captions")
@handles_errors
def get_coco(out: OutArg, source: SourceOpt = None, mirror: MirrorOpt = None, quiet: QuietOpt = False) -> None:
    """COCO photos with captions (image + text) and object categories as a multilabel target."""
    from mmcli.data.recipes.api import get_coco as get

    _get("coco-captions", out, quiet, lambda progress: get(out, source, mirror, progress))


@get_app.command("flickr8k")
@handles_errors
def get_flickr8k(out: OutArg, source: SourceOpt = None, mirror: MirrorOpt = None, quiet: QuietOpt = False) -> None:
    """Flickr8k photos with five captions each (image + text)."""
    from mmcli.data.recipes.api import get_flickr8k as get

    _get("flickr8k", out, quiet, lambda progress: get(out, source, mirror, progress))


@get_app.command("speakers")
@handles_errors
def get_speakers(
    out: OutArg,
    source: Annotated[Optional[Path], typer.Option(
        "--source", help="Required (no download): Resemblyzer's audio_data/ folder (github.com/resemble-ai/Resemblyzer; "
                         "LibriSpeech, CC BY 4.0) or a folder holding librispeech-speakers/ as ../shared/data.",
        show_default=False)] = None,
    segment_seconds: Annotated[float, typer.Option(
        "--segment-seconds", help="Cut every clip into non-overlapping segments this long (seconds, 0.1-60); "
                                  "a shorter trailing piece is dropped.")] = 2.0,
    quiet: QuietOpt = False,
) -> None:
    """LibriSpeech speakers for speaker verification (audio): label = speaker, train and test speakers disjoint."""
    from mmcli.data.recipes.api import get_speakers as get

    _get("speakers", out, quiet, lambda progress: get(out, source, segment_seconds, progress))


@get_app.command("av-identity")
@handles_errors
def get_av_identity(
    out: OutArg,
    source: Annotated[Optional[Path], typer.Option(
        "--source", help="Required (no download): a folder holding orl-faces/ (the ORL faces, AT&T) and "
                         "librispeech-speakers/ (Resemblyzer's LibriSpeech clips), as ../shared/data.",
        show_default=False)] = None,
    per_identity: Annotated[int, typer.Option(
        "--per-identity", help="Rows per identity (2-10): photo j with voice segment j of the speaker's first 8 s "
                               "cut into this many pieces.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pairing: which LibriSpeech speaker voices each face.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Synthetic audio-visual identities (image + audio): ORL faces each given a LibriSpeech voice, label = identity."""
    from mmcli.data.recipes.api import get_av_identity as get

    _get("av-identity", out, quiet, lambda progress: get(out, source, per_identity, seed, progress))


def _imported(manifest: Path, message: str) -> None:
    from mmcli.reporting.console import log

    log(message)
    typer.echo(str(manifest))


def _folder_import(kind: str, folder: Path, out: Optional[Path], quiet: bool) -> None:
    from mmcli.data.recipes.folders import import_folder

    set_quiet(quiet)
    manifest, files, classes = import_folder(kind, folder, out or folder / "manifest.csv")
    _imported(manifest, f"wrote {manifest}: {files:,} files in {classes} classes")


def _folder_command(kind: str) -> None:
    """`datasets import KINDfolder` for a kind read from files (mmcli.kinds): one per kind."""
    files = KINDS[kind].plural

    def command(folder: Path, out: ImportOutOpt = None, quiet: QuietOpt = False) -> None:
        _folder_import(f"{kind}folder", folder, out, quiet)

    help = f"Folder with one subfolder of {files} per class (optionally under train/, val/, test/)."
    command.__annotations__ = {"folder": Annotated[Path, typer.Argument(help=help)], "out": ImportOutOpt,
                               "quiet": QuietOpt, "return": None}  # evaluated here: the help names the kind's files
    command.__doc__ = f"Manifest for {files} sorted into one folder per class."
    command.__name__ = f"import_{kind}folder"
    import_app.command(f"{kind}folder")(handles_errors(command))


for _kind in KINDS:
    if KINDS[_kind].from_files:
        _folder_command(_kind)


@import_app.command("captions")
@handles_errors
def import_captions(
    folder: Annotated[Path, typer.Argument(help="Folder of image files.")],
    captions: Annotated[Path, typer.Option("--captions", help="CSV with one row per caption: an image file name "
                                           "(relative to DIR) and its caption; label and split columns are kept.")],
    out: ImportOutOpt = None,
    image_column: Annotated[str, typer.Option("--image-column", help="The CSV's column of image file names.")] = "image",
    caption_column: Annotated[str, typer.Option("--caption-column", help="The CSV's column of captions.")] = "caption",
    quiet: QuietOpt = False,
) -> None:
    """Manifest for a folder of images with a captions CSV (one row per image; one row per caption in *.captions.csv)."""
    from mmcli.data.recipes.captions import import_captions as run

    set_quiet(quiet)
    manifest, photos, n = run(folder, captions, out or folder / "manifest.csv", image_column, caption_column)
    _imported(manifest, f"wrote {manifest}: {photos:,} images, {n:,} captions")


@import_app.command("grid")
@handles_errors
def import_grid(
    folder: Annotated[Path, typer.Argument(help="GRID folder: its videos (*.mpg) and alignments (*.align), in it or below.")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write (never overwritten); its rows name the videos "
                                      "relative to it.")] = Path("grid-words/manifest.csv"),
    slots: Annotated[str, typer.Option("--slots", help="Comma-separated sentence slots whose words become rows: "
                                       "command, colour, preposition, letter, digit, adverb.")] = "command,colour,preposition,adverb",
    quiet: QuietOpt = False,
) -> None:
    """Manifest of GRID's spoken words: one row per word, the video with the word's start and end (its lips and its sound)."""
    from mmcli.data.recipes.grid import import_grid as run

    set_quiet(quiet)
    manifest, words, sentences = run(folder, out, tuple(s.strip() for s in slots.split(",") if s.strip()))
    _imported(manifest, f"wrote {manifest}: {words:,} words of {sentences:,} sentences")
