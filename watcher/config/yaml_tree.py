"""YAML text to the node tree the validation walks, and the few questions asked of its nodes.

The walk reads nodes instead of constructed objects: nodes keep line numbers and the text as
written, which YAML 1.1 would otherwise mangle (`job_id: 0123` is the int 83, `module: No` is
False).
"""

from __future__ import annotations

from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.config.model import ConfigError

# The C loader keeps a 10,000-job file fast; the pure-Python one builds the same node tree.
_Loader = type[yaml.SafeLoader | yaml.CSafeLoader]
LOADER: _Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
_NOT_NULL_TAG = "tag:yaml.org,2002:str"  # any other tag would do: the walk only tests for null
_IMPLICIT_TAGS = {ScalarNode: _NOT_NULL_TAG, SequenceNode: SEQ_TAG, MappingNode: _MAP_TAG}
_NULL_TEXTS = frozenset(("", "~", "null", "Null", "NULL"))  # plain scalars YAML 1.1 reads as null
_NULL_RESOLVING: dict[_Loader, _Loader] = {}  # see _null_resolving


def compose(text: str, source: str) -> Node:
    """The document's node tree; an empty document counts as an empty mapping."""
    try:
        root = yaml.compose(text, Loader=_null_resolving(LOADER))
    except yaml.MarkedYAMLError as error:
        raise ConfigError((_marked_problem(source, error),)) from None
    except yaml.reader.ReaderError as error:
        libyaml = LOADER is not yaml.SafeLoader
        line, column = _line_and_column(text, error.position, in_bytes=libyaml)
        raise ConfigError((f"{source}:{line}:{column}: invalid YAML: {error.reason}",)) from None
    except UnicodeEncodeError:  # the C loader encodes to UTF-8 first, which lone surrogates fail
        raise ConfigError((f"{source}: invalid YAML: text is not valid Unicode",)) from None
    except RecursionError:  # the pure-Python loader recurses per level; libyaml stops at 1000
        raise ConfigError((f"{source}: invalid YAML: nested too deeply",)) from None
    return MappingNode(_MAP_TAG, []) if root is None else root


def _line_and_column(text: str, position: int, *, in_bytes: bool) -> tuple[int, int]:
    """Where `position` is in `text`, counting from 1: libyaml counts it in bytes of UTF-8."""
    before = text[:position]
    if in_bytes:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace")
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _null_resolving(loader: _Loader) -> _Loader:
    """`loader` with `_NullResolver`'s tagging; made when first used, so a test may swap LOADER."""
    if loader not in _NULL_RESOLVING:
        _NULL_RESOLVING[loader] = cast(_Loader, type(loader.__name__, (_NullResolver, loader), {}))
    return _NULL_RESOLVING[loader]


class _NullResolver:
    """Tags plain scalars null or not, and nothing more: all that the walk asks (`is_null`).

    PyYAML's resolver tries the regular expressions of YAML 1.1's implicit types (bool, int,
    float, timestamp...) on every plain scalar and consults path resolvers on every node, all
    in Python: a sixth of composing a 10,000-job file, a third when the ids are unquoted. The
    walk reads every value as the text written, so the type those tags name never matters.
    """

    def resolve(self, kind: type[Node], value: str | None, implicit: Any) -> str:
        # `implicit` is (plain, quoted) for a scalar and a single bool for a collection.
        if kind is ScalarNode and implicit[0] and value in _NULL_TEXTS:
            return NULL_TAG
        return _IMPLICIT_TAGS[kind]

    def descend_resolver(self, *_: object) -> None:
        """No path resolvers: nothing to track on the way down or (below) back up."""

    ascend_resolver = descend_resolver


def _marked_problem(source: str, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    reason = error.problem or "malformed document"
    if error.context:
        reason = f"{reason} ({error.context})"
    return f"{where}: invalid YAML: {' '.join(reason.split())}"


def value_of(mapping: Node, key: str) -> Node | None:
    """The node of `key`'s value, read before (or besides) the mapping's own checks."""
    if isinstance(mapping, MappingNode):
        for name, value in mapping.value:
            if isinstance(name, ScalarNode) and name.value == key:
                return cast(Node, value)
    return None


def line_of(node: Node) -> int:
    """1-based line of `node`; stand-ins for absent sections of an empty file have no mark."""
    return node.start_mark.line + 1 if node.start_mark else 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def kind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a single value"


def empty_mapping(parent: Node) -> MappingNode:
    """Stands in for an absent section, placed at its parent so problems point somewhere real."""
    return MappingNode(_MAP_TAG, [], parent.start_mark, parent.end_mark)
