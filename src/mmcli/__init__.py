"""mmcli: unimodal, multimodal and cross-modal deep learning from the command line.

The Python API (docs/python.md): `mmcli.load(RUN)` -> a predictor, `mmcli.train(...)`,
`mmcli.compare(...)`. They are imported on first use, so `import mmcli` stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compare", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in ("load", "train", "Predictor"):
        from mmcli import api

        return getattr(api, name)
    if name == "compare":  # the subpackage, whose module object calls mmcli.api.compare
        import importlib

        return importlib.import_module("mmcli.compare")
    raise AttributeError(f"module 'mmcli' has no attribute '{name}'")
