"""YAML files read within bounds: configs come from users and, inside run folders that
travel between machines, from strangers. Only a regular file of at most YAML_MAX_BYTES is
read, with yaml's SafeLoader (no tag runs code), and a document is built only when it
expands, each alias counted as the copy it becomes, to at most YAML_MAX_NODES values nested
at most YAML_MAX_DEPTH levels deep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mmcli.errors import ConfigError

# What one YAML file may hold. A config is a few hundred bytes; run folders travel between
# machines, so a config.yaml may come from a stranger: nine levels of nine aliases (543
# bytes) expand to 387 million items, and each alias is counted here as the copy it becomes.
YAML_MAX_BYTES = 256 * 1024
YAML_MAX_NODES = 100_000  # scalars, lists and mappings, aliases expanded
YAML_MAX_DEPTH = 64


class YamlTooBig(yaml.YAMLError):
    """A YAML text that would expand beyond the bounds above."""


def _expanded_size(node: yaml.Node, depth: int, sizes: dict[int, int]) -> int:
    """The nodes `node` stands for once its aliases are copies. An alias is the node it
    names, so each node is counted once and remembered; a cycle never ends and hits the
    depth bound."""
    if depth > YAML_MAX_DEPTH:
        raise YamlTooBig(f"nests deeper than {YAML_MAX_DEPTH} levels (or an alias refers to itself)")
    if id(node) in sizes:
        return sizes[id(node)]
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    total = 1 + sum(_expanded_size(child, depth + 1, sizes) for child in children)
    if total > YAML_MAX_NODES:
        raise YamlTooBig(f"expands to more than {YAML_MAX_NODES:,} values (through its aliases: &anchor / *alias)")
    sizes[id(node)] = total
    return total


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants a dot: 1.0e-3), and that
    refuses a document that expands beyond YAML_MAX_NODES before building any of it."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, 0, {})
        return super().construct_document(node)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    if len(text) > YAML_MAX_BYTES:
        raise YamlTooBig(f"is longer than {YAML_MAX_BYTES // 1024} KiB")
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:  # the composer recurses once per level of nesting
        raise YamlTooBig(f"nests deeper than {YAML_MAX_DEPTH} levels") from None


def _read_text(path: Path) -> str:
    """The file's text, at most YAML_MAX_BYTES of it: only a regular file (a FIFO or a
    device would block or never end)."""
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"config file {path} is not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(YAML_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > YAML_MAX_BYTES:
        raise ConfigError(f"config file {path} is longer than {YAML_MAX_BYTES // 1024} KiB; a config is a few hundred bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None


def load_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(Path(path))
    try:
        values = read_yaml(text) or {}
    except YamlTooBig as exc:
        raise ConfigError(f"config file {path} {exc}; refusing to read it") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return values
