"""compare: expand families into variants, run them on the same splits and seeds, and
summarise the results with statistics.

`mmcli.compare` is also the Python API's `compare(...)` (mmcli.api.compare): this package's
module object is callable, so `mmcli.compare(items, data=...)` runs a comparison whether or
not the package has been imported."""

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mmcli.api import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
