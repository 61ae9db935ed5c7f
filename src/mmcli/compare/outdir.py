"""The output folder of a comparison: made with a ledger, resumed, or emptied of what
mmcli wrote there (mmcli.ledger); never a folder that holds files mmcli did not write."""

from __future__ import annotations

from pathlib import Path

from mmcli import ledger
from mmcli.errors import UsageError


def prepare_out(out: Path, overwrite: bool) -> None:
    """An empty or new folder gets a ledger (mmcli.ledger); a comparison folder is resumed,
    or with `overwrite` emptied of what mmcli provably wrote there, and refused when it
    holds anything else: mmcli deletes no file it did not write."""
    from mmcli.compare import runner  # here, not above: runner imports this module

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        head = ledger.header(out)
        if head is not None and head.get("kind") == "compare":
            if not overwrite:
                _check_outputs(out)
                return  # resumed: what is written is recorded in its ledger
            _empty(out)
        elif not (out / runner.MARKER).is_file():
            raise UsageError(f"{out}: folder exists, is not empty and holds no comparison; choose another --out")
        else:
            try:
                runner.load_plan(out)
            except UsageError:
                raise UsageError(f"{out}: holds a {runner.MARKER} that is not a comparison plan of this mmcli; refusing to "
                                 "use or overwrite the folder (choose another --out)") from None
            # resuming would retrain any cell whose fingerprint changed with the version (new
            # config keys) into run folders without a ledger, which mmcli may not replace
            raise UsageError(f"{out}: a comparison made by an older mmcli, without the list of the files mmcli "
                             f"wrote ({ledger.LEDGER}), so mmcli cannot tell its files from yours; refusing to "
                             f"{'overwrite' if overwrite else 'resume'} it. Its results still read with "
                             f"`mmcli compare --collect {out}`; to run it again, choose another --out (or delete "
                             "or move the folder yourself)")
    out.mkdir(parents=True, exist_ok=True)
    ledger.start(out, "compare")


def _check_outputs(out: Path) -> None:
    """Before any run: the files a resumed comparison will write over must be mmcli's."""
    from mmcli.compare import runner
    from mmcli.compare.collect import OUTPUTS

    for name in (runner.MARKER, *OUTPUTS):
        ledger.check_replace(out / name)


def _empty(out: Path) -> None:
    found = ledger.survey(out)
    if found.busy:
        raise UsageError(f"{out}: a job of this comparison is running ({found.names(found.busy)} held); "
                         "wait for it to end, or stop it, before --overwrite")
    if found.foreign:
        raise UsageError(f"{out}: holds {len(found.foreign)} file(s) that mmcli did not write or that changed since it "
                         f"wrote them ({found.names(found.foreign)}); refusing to overwrite it (move them out of the "
                         "folder, or choose another --out)")
    ledger.remove(found, keep_root=True)
