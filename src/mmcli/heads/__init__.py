"""Task heads: each task is a head, its loss, its metrics and its prediction format.

A task is registered in `TASKS`; the training loop, evaluation, prediction and compare
only call the `Task` interface, so a new task is one new registered piece.
"""

from __future__ import annotations

from mmcli.registry import Registry

TASKS: Registry = Registry("task")


def _register_builtins() -> None:
    from mmcli.heads import classification  # noqa: F401  (registration side effects)


_register_builtins()
