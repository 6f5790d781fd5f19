"""Generated mutants of the example manifests' *text*: what a hurried or hostile user types.

`yaml_mutants(texts, count, seed)` returns `count` byte strings, each an
example file with one or two text-level changes: a value replaced by a YAML
1.1 surprise (`on`, `2024-02-30`, `0755`, `!!int x`, ...), a key written twice,
deep nesting, an alias bomb, a truncation, a stray character, a shifted
indentation, bytes that are not UTF-8. Deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

VALUES = [
    "on",
    "off",
    "yes",
    "No",
    "y",
    "N",
    "True",
    "FALSE",
    "true",
    "2024-02-30",
    "2024-02-28",
    "2001-12-14t21:59:43.10-05:00",
    "12:30:00",
    "1:30",
    "0755",
    "0o17",
    "0b11",
    "1_000",
    "0x10",
    ".inf",
    "-.Inf",
    ".nan",
    "~",
    "null",
    "",
    "1e3",
    "1.0",
    "1.5",
    "-1",
    "0",
    "2",
    "3",
    str(2**63),
    str(2**63 - 1),
    str(10**12),
    str(10**30),
    "1e400",
    "!!int x",
    "!!int 3",
    "!!float 2",
    "!!bool yes",
    "!!str 3",
    "!!null ''",
    "!!binary aGk=",
    "!!timestamp 2024-01-01",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!python/name:os.system",
    "!!python/object/apply:os.system [echo]",
    "!foo x",
    "! on",
    "*undefined",
    "&anchor 3",
    "'quoted'",
    '"unterminated',
    "[1, 2",
    "{a: 1}",
    "[]",
    "{}",
    "=",
    "<<",
    "@x",
    "`x`",
    "%x",
    "a: b",
    "- item",
    "? x",
    "|",
    ">-",
    "\t2",
    "x" * 300,
    "job\\n",
    '"job\\n"',
    '"\\u0000"',
    "ü",
    "\U0001f600",
]
GARBAGE = ["\t", "\x00", "\x07", "\x85", "\ufeff", "{", "}", "[", "]", ":", "-", "'", '"', "&",
           "*", "!", "%", "@", "`", "#", "|", ">", "?", ",", "\n", "\r", " "]  # fmt: skip
_VALUE_LINE = re.compile(r"^(\s*)([A-Za-z][\w.-]*): (\S.*?)(\s+#.*)?$")


def _value_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if _VALUE_LINE.match(line)]


def replace_value(text: str, r: random.Random) -> str:
    lines = text.split("\n")
    index = r.choice(_value_lines(lines))
    indent, key, _, _ = _VALUE_LINE.match(lines[index]).groups()
    lines[index] = f"{indent}{key}: {r.choice(VALUES)}"
    return "\n".join(lines)


def duplicate_key(text: str, r: random.Random) -> str:
    lines = text.split("\n")
    index = r.choice(_value_lines(lines))
    indent, key, _, _ = _VALUE_LINE.match(lines[index]).groups()
    lines.insert(index + 1, f"{indent}{key}: {r.choice(['2', '500', '0', 'true', 'x'])}")
    return "\n".join(lines)


def nest_deeply(text: str, r: random.Random) -> str:
    lines = text.split("\n")
    index = r.choice(_value_lines(lines))
    indent, key, _, _ = _VALUE_LINE.match(lines[index]).groups()
    depth = r.choice([10, 63, 64, 65, 100, 1_000, 20_000])
    opener, closer = r.choice([("[", "]"), ("{a: ", "}")])
    lines[index] = f"{indent}{key}: {opener * depth}1{closer * depth}"
    return "\n".join(lines)


def alias_bomb(text: str, r: random.Random) -> str:
    levels = r.choice([3, 6, 9])
    bomb = ["lol0: &lol0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, levels)]
    where = r.choice(["top", "labels"])
    if where == "top":
        return text.rstrip("\n") + "\n" + "\n".join(bomb) + "\n"
    return (
        text.rstrip("\n")
        + "\n  template:\n    labels:\n"
        + "\n".join("      " + line for line in bomb)
    )


def recursive_alias(text: str, r: random.Random) -> str:
    return text.rstrip("\n") + "\n" + r.choice(["loop: &a [*a]", "loop: &a {b: *a}"]) + "\n"


def truncate(text: str, r: random.Random) -> str:
    return text[: r.randrange(len(text))]


def insert_garbage(text: str, r: random.Random) -> str:
    at = r.randrange(len(text))
    return text[:at] + r.choice(GARBAGE) + text[at:]


def shift_indentation(text: str, r: random.Random) -> str:
    lines = text.split("\n")
    index = r.choice(_value_lines(lines))
    if r.random() < 0.5:
        lines[index] = " " + lines[index]
    else:
        lines[index] = lines[index][r.choice([1, 2]) :]
    return "\n".join(lines)


def another_document(text: str, r: random.Random) -> str:
    return r.choice(
        [
            "",
            "---\n",
            "- a\n- b\n",
            "just a string\n",
            "42\n",
            text + "\n---\n" + text,
            text + "\n---\n- not a job\n",
            "%YAML 1.1\n---\n" + text,
            "%TAG ! tag:example.com,2000:\n---\n" + text,
        ]
    )


MUTATIONS: list[Callable[[str, random.Random], str]] = [
    replace_value,
    replace_value,
    replace_value,
    replace_value,
    duplicate_key,
    duplicate_key,
    nest_deeply,
    alias_bomb,
    recursive_alias,
    truncate,
    insert_garbage,
    insert_garbage,
    shift_indentation,
    another_document,
]


def yaml_mutants(texts: list[str], count: int, seed: int) -> list[bytes]:
    """`count` mutated files, each of an example chosen in turn, with 1-2 changes."""
    r = random.Random(seed)
    result = []
    for index in range(count):
        text = texts[index % len(texts)]
        for _ in range(r.randint(1, 2)):
            mutation = r.choice(MUTATIONS)
            if not _value_lines(text.split("\n")) or not text:
                mutation = another_document  # nothing left to change inside
            text = mutation(text, r)
        if r.random() < 0.03:
            result.append(text.encode("latin-1", errors="replace") + b"\xff\xfe")
        else:
            result.append(text.encode("utf-8", errors="surrogatepass"))
    return result
