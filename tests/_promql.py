"""A small PromQL tokenizer: which metrics, with which label matchers, an expression selects.

Enough of PromQL's lexical grammar (strings, numbers, durations, identifiers,
operators, comments) plus Grafana's template variables (`$var`, `${var}`,
`[[var]]`) to find every vector selector in a dashboard query or alert rule.
It does not check syntax: Prometheus itself does that in the scrape test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]+\}|\$\w+|\[\[\w+(?::\w+)?\]\])
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+(?:ms|s|m|h|d|w|y))+|\d*\.?\d+(?:[eE][-+]?\d+)?)
  | (?P<identifier>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<operator>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)

#: Words that are never metric names where they stand.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip
#: Aggregations: `sum by (x) (...)` puts a keyword, not "(", after the name.
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
#: Keywords followed by a parenthesised list of label names (not expressions).
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


class PromQLSyntaxError(ValueError):
    """A character that starts no PromQL token."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass
class Selector:
    """One vector selector: `name{label op "value", ...}` (name None for `{__name__=...}`)."""

    name: str | None
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)


def tokenize(expression: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise PromQLSyntaxError(
                f"unexpected {expression[position]!r} at {position} in {expression!r}"
            )
        position = match.end()
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group()))
    return tokens


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return bytes(text[1:-1], "utf-8").decode("unicode_escape")


def selectors(expression: str) -> list[Selector]:
    """Every vector selector of `expression`, in order of appearance."""
    tokens = tokenize(expression)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.kind == "identifier" and token.text.lower() in LABEL_LIST_KEYWORDS:
            i += 1
            if following is not None and following.text == "(":
                i = _skip_past(tokens, i, "(", ")")
            continue
        if token.kind == "identifier" and _is_metric_name(token, following):
            selector = Selector(token.text)
            i += 1
            if following is not None and following.text == "{":
                i = _read_matchers(tokens, i, selector)
            found.append(selector)
            continue
        if token.text == "{":
            selector = Selector(None)
            i = _read_matchers(tokens, i, selector)
            name = selector.matchers.get("__name__")
            if name and name[0] == "=":
                selector.name = name[1]
            found.append(selector)
            continue
        if token.text == "[":
            i = _skip_past(tokens, i, "[", "]")  # a range or subquery: durations only
            continue
        i += 1
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names `expression` selects (selectors by `__name__` regex are refused)."""
    names = set()
    for selector in selectors(expression):
        if selector.name is None:
            raise PromQLSyntaxError(f"a selector without a fixed metric name in {expression!r}")
        names.add(selector.name)
    return names


def _is_metric_name(token: Token, following: Token | None) -> bool:
    word = token.text.lower()
    if word in KEYWORDS:
        return False
    if following is not None and following.text == "(":
        return False  # a function or an aggregation
    return not (
        word in AGGREGATIONS
        and following is not None
        and following.text.lower() in {"by", "without"}
    )


def _skip_past(tokens: list[Token], start: int, opening: str, closing: str) -> int:
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].text == opening:
            depth += 1
        elif tokens[i].text == closing:
            depth -= 1
            if depth == 0:
                return i + 1
    raise PromQLSyntaxError(f"unbalanced {opening!r}")


def _read_matchers(tokens: list[Token], start: int, selector: Selector) -> int:
    """Parse `{label op value, ...}` starting at the "{"; returns the index after "}"."""
    i = start + 1
    while i < len(tokens) and tokens[i].text != "}":
        if tokens[i].text == ",":
            i += 1
            continue
        try:
            label, operator, value = tokens[i], tokens[i + 1], tokens[i + 2]
        except IndexError:
            raise PromQLSyntaxError("unterminated label matchers") from None
        if operator.text not in {"=", "!=", "=~", "!~"} or value.kind != "string":
            raise PromQLSyntaxError(f"bad label matcher near {label.text!r}")
        name = _unquote(label.text) if label.kind == "string" else label.text
        selector.matchers[name] = (operator.text, _unquote(value.text))
        i += 3
    if i >= len(tokens):
        raise PromQLSyntaxError("unterminated label matchers")
    return i + 1


#: Grafana's `label_values(selector, label)` variable query.
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")


def label_values_query(query: str) -> tuple[str, str]:
    """Split Grafana's `label_values(selector, label)` into (PromQL selector, label)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise PromQLSyntaxError(f"not a label_values(selector, label) query: {query!r}")
    return match["selector"], match["label"]
