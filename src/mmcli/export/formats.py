"""Writing a module as ONNX or TorchScript, and running the written file again.

ONNX through torch's own exporter, `torch.onnx.export(dynamo=True)`: `torch.export`
captures the forward pass with symbolic sizes (the batch, and the length of text and
audio), onnxscript translates it (the default opset of the installed torch). The older
TorchScript-based ONNX exporter refuses mmcli's small CNN at image sizes under 64 (an
adaptive pooling that enlarges) and layer norms over traced sizes. The file is run by
onnxruntime. TorchScript through `torch.jit.trace` on a batch where every branch of the
model takes its general path; the file is run by `torch.jit.load`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from mmcli.errors import RunFailed, UsageError
from mmcli.export.graph import Graph

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
EXTERNAL_DATA_BYTES = 1_500_000_000  # larger weights go to a .data file beside the .onnx (protobuf's 2 GB limit)


def require(fmt: str) -> None:
    """Refuse a format whose libraries are missing, before anything is loaded or written."""
    if fmt != "onnx":
        return
    import importlib

    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                         "installed: pip install 'mmcli[export]' (or --format torchscript, which needs only torch)")


def versions(fmt: str) -> dict[str, str]:
    """The libraries that wrote the file (and run it back), for export.json."""
    out: dict[str, str] = {"torch": str(torch.__version__)}
    if fmt == "onnx":
        import onnx
        import onnxruntime
        import onnxscript

        out |= {"onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}
    return out


def opset(path: Path) -> int | None:
    """The default-domain ONNX opset of a written model (None: not an ONNX file)."""
    if path.suffix != SUFFIX["onnx"]:
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def write(fmt: str, graph: Graph, example: list[torch.Tensor], folder: Path) -> list[Path]:
    """Write `graph` into `folder`; the files written (an ONNX model may have a .data file)."""
    path = folder / f"{graph.stem}{SUFFIX[fmt]}"
    with quiet(), torch.no_grad():
        try:
            if fmt == "onnx":
                _onnx(graph, example, path)
            else:
                traced = torch.jit.trace(graph.module, tuple(example), check_trace=False)
                torch.jit.save(traced, str(path))
        except (OSError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 (the exporters raise many kinds; each is a model it cannot export)
            raise UsageError(_cannot(fmt, graph, exc)) from None
    return sorted(folder.glob(f"{path.name}*"))


def _onnx(graph: Graph, example: list[torch.Tensor], path: Path) -> None:
    dim = torch.export.Dim.DYNAMIC
    shapes = tuple({i: dim for i, size in enumerate(slot.shape) if isinstance(size, str)} for slot in graph.slots)
    large = sum(p.numel() * p.element_size() for p in graph.module.parameters()) > EXTERNAL_DATA_BYTES
    torch.onnx.export(graph.module, tuple(example), str(path), dynamo=True, verbose=False, external_data=large,
                      input_names=[s.name for s in graph.slots], output_names=[n for n, _ in graph.outputs],
                      dynamic_shapes=(shapes,))


def _cannot(fmt: str, graph: Graph, exc: BaseException) -> str:
    """Why a model could not be exported, in a paragraph: the first line of the deepest cause,
    and the line of the model's code where the capture stopped, where the exporter names it."""
    root: BaseException = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    reason = f"{type(root).__name__}: {lines[0] if lines else 'no message'}"[:300]
    found = _WHERE.findall(f"{exc}\n{root}") or _model_frames(exc)
    if found:
        file, line, code = found[-1]
        reason += f", at {_short(file)}:{line} ({code.strip()})"
    tool = "torch.export (the ONNX exporter's capture)" if fmt == "onnx" else "torch.jit.trace"
    other = " --format torchscript traces instead, and may work." if fmt == "onnx" else ""
    return (f"cannot export the model of {', '.join(graph.modalities)} as {fmt}: {tool} failed: {reason}.{other} "
            "Rerun with --debug for the traceback.")


_WHERE = re.compile(r'File "([^"]+)", line (\d+), in \w+\n\s*(\S[^\n]*)')


def _model_frames(exc: BaseException) -> list[tuple[str, int, str]]:
    """(file, line, code) of the tracebacks' frames in mmcli's model code, outermost first."""
    import traceback

    frames, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames += [(f.filename, f.lineno or 0, f.line or "") for f in traceback.extract_tb(exc.__traceback__)
                   if "mmcli" in Path(f.filename).parts and "export" not in Path(f.filename).parts]
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return frames


def _short(file: str) -> str:
    """A source file's path from the mmcli package on (where it is one of mmcli's)."""
    parts = Path(file).parts
    return "/".join(parts[parts.index("mmcli"):]) if "mmcli" in parts else file


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the exporters' progress lines (stdout carries mmcli's results), what they print
    and log (torch.export prints the whole graph when it fails) and their warnings (tracer
    warnings, deprecations) to themselves: the error says what matters."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


class Runner:
    """An exported file loaded back: `run(tensors)` -> its outputs, as float32 tensors."""

    def __init__(self, fmt: str, path: Path):
        self.fmt = fmt
        with quiet():  # torch.jit.load warns that TorchScript is deprecated
            try:
                if fmt == "onnx":
                    import onnxruntime

                    options = onnxruntime.SessionOptions()
                    options.log_severity_level = 3  # errors only: constant folding notes are not the user's business
                    self.session: Any = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    self.names = [i.name for i in self.session.get_inputs()]
                else:
                    self.module = torch.jit.load(str(path), map_location="cpu")
            except (OSError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 (onnxruntime's and torch's own errors)
                reader = "onnxruntime" if fmt == "onnx" else "torch.jit.load"
                raise RunFailed(f"the exported {path.name} does not load in {reader}: {' '.join(str(exc).split())[:400]}") from None

    def run(self, names: list[str], tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.fmt == "onnx":
            feed = {n: t.numpy() for n, t in zip(names, tensors) if n in self.names}
            return [torch.from_numpy(o).float() for o in self.session.run(None, feed)]
        with torch.no_grad():
            return [o.float() for o in self.module(*tensors)]
