"""Which nodes a user means: node names, op types or glob patterns of either.

``--exclude`` and sparsity tables (``--sparsity-file``, ``per_layer_sparsity``) take keys such as
``stem/conv``, ``Gemm``, ``*/se/*`` or ``Conv_1?``. A key with ``*``, ``?`` or ``[`` is a
shell-style pattern (``fnmatch``, case-sensitive) matched against a node's name and its op type;
any other key must equal one of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from fq_onnx.errors import FqOnnxError

_GLOB = frozenset("*?[")


def is_pattern(key: str) -> bool:
    return any(ch in _GLOB for ch in key)


def matches(key: str, name: str, op: str) -> bool:
    """Whether ``key`` (a name, an op type or a pattern of either) selects node ``name`` of type ``op``."""
    if is_pattern(key):
        return fnmatchcase(name, key) or fnmatchcase(op, key)
    return key == name or key == op


def selected(keys: Iterable[str], name: str, op: str) -> bool:
    return any(matches(key, name, op) for key in keys)


def resolve_table(table: Mapping[str, float], nodes: Iterable[tuple[str, str]], source: str) -> dict[str, float]:
    """The per-node values of a table keyed by node names, op types or patterns.

    ``nodes`` are ``(name, op)`` of every node the table may address. A node takes the value of
    its own name if the table has it, else of its op type, else of the first pattern (in the
    table's order) that matches it; nodes no key selects are left out (they get the default). A
    key that selects no node is an error naming ``source``, so a typo never passes silently.
    """
    nodes = list(nodes)
    unused = [key for key in table if not any(matches(key, name, op) for name, op in nodes)]
    if unused:
        raise FqOnnxError(f"{source}: no compressible node named or matching {', '.join(map(repr, unused))}")
    patterns = [key for key in table if is_pattern(key)]
    resolved = {}
    for name, op in nodes:
        for key in (name, op):
            if key in table:
                resolved[name] = table[key]
                break
        else:
            first = next((key for key in patterns if matches(key, name, op)), None)
            if first is not None:
                resolved[name] = table[first]
    return resolved
