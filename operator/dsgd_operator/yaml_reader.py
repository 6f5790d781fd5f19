"""The one YAML reader of every front door: manifests read as the API server would, or refused.

`kubectl apply` turns YAML into JSON with sigs.k8s.io/yaml (go-yaml v2, close to
YAML 1.1), PyYAML's safe loader reads YAML 1.1 with Python twists, and other
tools read YAML 1.2. Where they disagree, a manifest means different things to
different readers. `read_documents` accepts only YAML that every one of them
reads the same way, as plain JSON data, and refuses the rest with one line per
problem naming the file, the field path and the line:

- duplicate keys are refused (PyYAML silently keeps the last one);
- plain `yes/no/on/off/y/n` (any case) are refused: booleans to kubectl, strings
  to YAML 1.2; write `true`/`false`, or quote them;
- numbers that YAML 1.1 and 1.2 read differently (`0755`, `0o17`, `0b101`,
  `1_000`) are refused; `.inf` and `.nan` too, JSON has no such numbers;
- dates (`2024-02-30`), times and sexagesimals (`1:30`) are strings, as kubectl
  reads them (PyYAML would make dates and base-60 numbers of them);
- tags: `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`, `!!seq` only, and
  the value must fit the tag (`!!int x` is refused); any other tag is refused;
- keys are strings;
- limits: MAX_BYTES of text, MAX_DEPTH levels of nesting, MAX_NODES values once
  aliases are expanded (a "billion laughs" document is refused, not expanded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

#: etcd stores objects of at most 1.5 MiB; a larger manifest could never be created.
MAX_BYTES = 1536 * 1024
#: Far deeper than any Kubernetes object; deep enough nesting would crash the parser.
MAX_DEPTH = 64
#: Values (scalars, mappings, sequences) once aliases are expanded.
MAX_NODES = 100_000

_STR, _INT, _FLOAT = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL, _NULL = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


def _whole(pattern: str) -> re.Pattern[str]:
    """A pattern that matches whole values only (PyYAML's resolver calls `match`)."""
    return re.compile(rf"(?:{pattern})\Z")


_NULL_RE = _whole(r"~|null|Null|NULL|")
_BOOL_RE = _whole(r"true|True|TRUE|false|False|FALSE")
_INT_RE = _whole(r"[-+]?(0|[1-9][0-9]*)|0x[0-9a-fA-F]+")
_FLOAT_RE = _whole(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
#: Plain scalars that YAML readers do not agree on, with what to write instead.
_AMBIGUOUS = (
    (
        re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"),
        "is a boolean to YAML 1.1 (kubectl) but a string to YAML 1.2: write true or false, "
        "or quote it",
    ),
    (
        re.compile(r"[-+]?(0[0-9_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*_[0-9_]*(\.[0-9_]*)?)"),
        "is a number to some YAML readers (octal, binary or with '_') and a string or another "
        "number to others: write it in plain decimal, or quote it",
    ),
    (
        re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"),
        "is not a number JSON can carry (the API server would never see it)",
    ),
)
_SUPPORTED_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ}


@dataclass(frozen=True)
class YamlProblem(Exception):
    """Why a YAML text is refused: one line, with the field path and position when known."""

    message: str

    def __str__(self) -> str:
        return self.message


class _Resolver(BaseResolver):
    """Implicit types every YAML reader agrees on (JSON's, in YAML's spellings), plus merge keys."""


_Resolver.add_implicit_resolver(_NULL, _NULL_RE, ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(_BOOL, _BOOL_RE, list("tTfF"))
_Resolver.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
_Resolver.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+.0123456789"))
_Resolver.add_implicit_resolver(_MERGE, _whole(r"<<"), ["<"])


def _path_text(path: list[Any], shown: int = 12) -> str:
    """The field path `spec.template.env[0].name`; elided after `shown` parts."""
    text = ""
    for part in path[:shown]:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text + ("…" if len(path) > shown else "")


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, _Resolver):
    """PyYAML's pure-Python safe loader with the checks above done while composing."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self.path: list[Any] = []
        self.nodes = 0
        self.expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth)
        self.open_anchors: set[str] = set()  # anchors whose node is being composed

    def refuse(self, mark: Any, message: str) -> None:
        where = _path_text(self.path)
        position = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        located = ", ".join(part for part in (where, position) if part)
        raise YamlProblem(f"{located}: {message}" if located else message)

    def compose_document(self) -> Node:
        self.path, self.nodes = [], 0
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if len(self.path) >= MAX_DEPTH:
            self.refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                self.refuse(event.start_mark, f"the alias *{event.anchor} lies inside its anchor")
            target = self.anchors.get(event.anchor)
            size, depth = _expanded(target, self.expanded) if target is not None else (1, 1)
            if len(self.path) + depth > MAX_DEPTH:
                self.refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels (aliases)")
            self.nodes += size
        else:
            self.nodes += 1
            tag = getattr(event, "tag", None)
            if tag not in (None, "!") and tag not in _SUPPORTED_TAGS:
                self.refuse(event.start_mark, f"the tag {tag} is not supported here")
        if self.nodes > MAX_NODES:
            self.refuse(event.start_mark, f"more than {MAX_NODES} values (aliases expanded)")
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: str | None) -> Node:
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        if event.tag is None and event.style is None:  # plain: the resolver decides
            for pattern, problem in _AMBIGUOUS:
                if pattern.fullmatch(node.value):
                    self.refuse(event.start_mark, f"{node.value!r} {problem}")
        elif event.tag in (_INT, _FLOAT, _BOOL, _NULL):
            resolved = self.resolve(ScalarNode, node.value, (True, False))
            fits = resolved == event.tag or (event.tag == _FLOAT and resolved == _INT)
            if not fits:
                self.refuse(event.start_mark, f"{node.value!r} is not a valid {event.tag[18:]}")
        return node

    def compose_sequence_node(self, anchor: str | None) -> Node:
        start = self.get_event()
        tag = start.tag if start.tag not in (None, "!") else _SEQ
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
            self.open_anchors.add(anchor)
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            self.path.append(index)
            node.value.append(self.compose_node(node, index))
            self.path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        self.open_anchors.discard(anchor)
        return node

    def compose_mapping_node(self, anchor: str | None) -> Node:
        start = self.get_event()
        tag = start.tag if start.tag not in (None, "!") else _MAP
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
            self.open_anchors.add(anchor)
        seen: dict[str, int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key = self.compose_node(node, None)
            if not isinstance(key, ScalarNode) or key.tag not in (_STR, _MERGE):
                self.refuse(key.start_mark, "keys must be strings (quote this one)")
            if key.tag == _STR:
                if key.value in seen:
                    self.path.append(key.value)
                    self.refuse(
                        key.start_mark, f"duplicate key (first at line {seen[key.value] + 1})"
                    )
                seen[key.value] = key.start_mark.line
            self.path.append(key.value)
            value = self.compose_node(node, key)
            self.path.pop()
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        self.open_anchors.discard(anchor)
        return node


def _expanded(node: Node, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, depth) of `node` with every alias inside it expanded.

    Memoized: the alias targets inside `node` were measured when their aliases
    were composed, so the recursion never goes deeper than the text's own nesting.
    """
    if id(node) in memo:
        return memo[id(node)]
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    measured = [_expanded(child, memo) for child in children]
    result = (1 + sum(size for size, _ in measured), 1 + max((d for _, d in measured), default=0))
    memo[id(node)] = result
    return result


def read_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML (or JSON) text, as plain JSON-like data.

    Raises YamlProblem (one line: field path, line and column, what is wrong) for
    anything the module docstring refuses, and for malformed YAML.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise YamlProblem(f"larger than {MAX_BYTES // 1024} KiB; no Kubernetes object is")
    loader = None
    try:
        loader = _Loader(text)
        documents = []
        while loader.check_node():
            document = loader.construct_document(loader.get_node())
            if document is not None:
                documents.append(document)
        return documents
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "malformed YAML"
        position = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlProblem(f"{position}malformed YAML: {problem}") from None
    except yaml.YAMLError as error:  # the reader's: a character YAML does not allow
        raise YamlProblem(f"malformed YAML: {' '.join(str(error).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()
