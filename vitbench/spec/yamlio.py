"""YAML reading: a safe loader that reads ``1e-3`` as a float and refuses hostile documents.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*: a learning rate written the
way everyone writes it would silently fail type checks. The float resolver below is YAML 1.2's.

Every file the tool reads (experiments, run configs, profiles, compare variants) is a JSON-like
config, so the loader accepts only that: strings, numbers, booleans, null, lists and mappings with
unique string keys. Anything else — ``!!python/object``, ``!foo``, ``!!binary``, ``!!set``,
``!!timestamp`` (an unquoted date), a list as a key — is refused while composing, with the line
and column, before a single Python object is built. The node graph is checked as it is composed:

* nesting deeper than MAX_DEPTH levels is refused before PyYAML's recursive composer descends
  further (no RecursionError);
* sizes are counted with aliases expanded (a node's size includes what its aliases point to), so a
  "billion laughs" document is refused after a few hundred nodes instead of exhausting memory, and
  a recursive alias (a node that contains itself) is refused;
* aliases are allowed (none of the repository's YAML uses them, but they are plain YAML), and the
  loaded value never shares sub-objects between aliases, so code that edits one place of a config
  cannot edit another.

Violations raise :class:`RefusedYAML`, a ``yaml.MarkedYAMLError``: callers that already turn
``yaml.YAMLError`` into a one-line error (vitbench.spec.runconfig.read_yaml, --set parsing) need
nothing new.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# --- limits: why each number ------------------------------------------------------------------
MAX_FILE_BYTES = 1 << 20  # 1 MiB: the largest YAML in the repository is 7 KB; parsing 1 MiB takes ~1 s
MAX_DEPTH = 32  # nesting levels (scalars count); the repository's deepest file has 10
MAX_NODES = 100_000  # scalars + collections, aliases expanded: 30x the largest file; caps billion laughs
MAX_INT_CHARS = 64  # an integer literal longer than this is no config value (int() of long ones is slow)
MAX_INT = 2**63 - 1  # beyond int64 nothing downstream (float(), torch, JSON readers) is safe

_STD = "tag:yaml.org,2002:"
SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null")}
MERGE = _STD + "merge"
KEY_TAGS = {_STD + "str", MERGE}  # ``<<: *anchor`` merge keys are plain YAML
WHAT = {"timestamp": "a date/time", "binary": "binary data", "set": "a set", "omap": "an ordered map",
        "pairs": "a list of pairs", "value": "a '=' value"}


class RefusedYAML(yaml.MarkedYAMLError):
    """A well-formed YAML document this tool refuses (too large, too deep, an unsupported type)."""


def _tag(tag: str) -> str:
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag


def _kind(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return f"{_tag(node.tag)} {node.value!r:.40}"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no arbitrary objects) with YAML 1.2 floats and the limits above."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0  # collections open around the node being composed
        self._composed = 0  # nodes composed so far (aliases not expanded): an early stop
        self._metrics: dict[Node, tuple[int, int]] = {}  # node -> (size, height) with aliases expanded
        self.had_alias = False

    # Composition ------------------------------------------------------------------------------
    def compose_node(self, parent: Node | None, index: Any) -> Node:  # noqa: D102
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and target not in self._metrics:
                raise RefusedYAML(None, None, f"alias *{event.anchor} refers to a node that contains it "
                                  "(a recursive alias)", event.start_mark)
            self.had_alias = True
            return super().compose_node(parent, index)  # raises for an undefined alias
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise RefusedYAML(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._composed += 1
        if self._composed > MAX_NODES:
            raise RefusedYAML(None, None, f"has more than {MAX_NODES} values", event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._check(node)
        return node

    def _check(self, node: Node) -> None:
        """Tags, keys, and (size, height) of a just-composed node; its children are all checked."""
        if isinstance(node, ScalarNode):
            if node.tag not in SCALAR_TAGS and node.tag != MERGE:  # a '<<' is checked where it is used
                self._refuse_tag(node)
            if node.tag == _STD + "int" and len(node.value) > MAX_INT_CHARS:
                raise RefusedYAML(None, None, f"integer longer than {MAX_INT_CHARS} characters", node.start_mark)
            self._metrics[node] = (1, 1)
            return
        if isinstance(node, SequenceNode):
            if node.tag != _STD + "seq":
                self._refuse_tag(node)
            children = list(node.value)
            for item in children:
                self._not_merge(item)
        else:
            if node.tag != _STD + "map":
                self._refuse_tag(node)
            children = []
            seen: dict[str, ScalarNode] = {}
            for key, value in node.value:
                if not isinstance(key, ScalarNode) or key.tag not in KEY_TAGS:
                    hint = " (quote it to make it a string)" if isinstance(key, ScalarNode) else ""
                    raise RefusedYAML(None, None, f"mapping keys must be strings, got {_kind(key)}{hint}",
                                      key.start_mark)
                if key.tag == _STD + "str":
                    if key.value in seen:
                        first = seen[key.value].start_mark
                        raise RefusedYAML(None, None, f"duplicate key {key.value!r:.40} (first at line "
                                          f"{first.line + 1})", key.start_mark)
                    seen[key.value] = key
                self._not_merge(value)
                children += [key, value]
        size = 1 + sum(self._metrics[c][0] for c in children)
        height = 1 + max((self._metrics[c][1] for c in children), default=0)
        if size > MAX_NODES:
            raise RefusedYAML(None, None, f"expands to more than {MAX_NODES} values once aliases are "
                              "expanded", node.start_mark)
        if height > MAX_DEPTH:
            raise RefusedYAML(None, None, f"nested deeper than {MAX_DEPTH} levels once aliases are "
                              "expanded", node.start_mark)
        self._metrics[node] = (size, height)

    @staticmethod
    def _not_merge(node: Node) -> None:
        if isinstance(node, ScalarNode) and node.tag == MERGE:
            raise RefusedYAML(None, None, "a merge key '<<' where a value belongs (quote it to make it a string)",
                              node.start_mark)

    @staticmethod
    def _refuse_tag(node: Node) -> None:
        name = node.tag[len(_STD):] if node.tag.startswith(_STD) else ""
        what = f"{WHAT[name]} ({_tag(node.tag)})" if name in WHAT else f"the tag {_tag(node.tag)}"
        raise RefusedYAML(None, None, f"{what} is not allowed: values are strings, numbers, "
                          "booleans, null, lists and mappings" + (" (quote it to make it a string)"
                                                                  if isinstance(node, ScalarNode) else ""),
                          node.start_mark)

    # Construction -----------------------------------------------------------------------------
    def construct_object(self, node: Node, deep: bool = False) -> Any:  # noqa: D102
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. the date 2020-13-45, int('0x')
            raise RefusedYAML(None, None, f"cannot read {_kind(node)}: {exc}", node.start_mark) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:  # noqa: D102
        value = super().construct_yaml_int(node)
        if abs(value) > MAX_INT:
            raise RefusedYAML(None, None, f"integer {node.value:.40} is out of range (at most {MAX_INT})",
                              node.start_mark)
        return value


SafeLoader.add_constructor(_STD + "int", SafeLoader.construct_yaml_int)
SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _unshare(value: Any) -> Any:
    """A copy in which no list or dict appears twice (aliases become independent copies).

    Recursion is bounded: the composed height (aliases expanded) is at most MAX_DEPTH.
    """
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def loads(text: str) -> Any:
    """One YAML document → plain Python values; raises yaml.YAMLError (RefusedYAML for the limits)."""
    if len(text) > MAX_FILE_BYTES:
        raise RefusedYAML(None, None, f"longer than {MAX_FILE_BYTES} characters", None)
    loader = SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            loader._not_merge(node)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return _unshare(data) if loader.had_alias else data


def value_text(v: Any) -> str:
    """A config value as a grid label shows it: floats in %g (3e-3, not 0.003), everything else as str."""
    return f"{v:g}" if isinstance(v, float) else str(v)
