"""Read a Dockerfile's instructions and the `pip install` commands of its RUN steps.

Enough of the Dockerfile grammar for static checks: comments, line
continuations, ARG defaults substituted into FROM, exec (JSON) and shell forms.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

#: pip options that take a value (the next word), so that it is not read as a requirement.
PIP_OPTIONS_WITH_VALUE = {
    "-c", "--constraint", "-r", "--requirement", "-e", "--editable", "-t", "--target",
    "--prefix", "--root", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "--root-user-action", "--progress-bar", "--cache-dir", "--src", "--platform",
    "--python-version", "--implementation", "--abi", "--upgrade-strategy", "--report",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest of the (joined) line

    def exec_form(self) -> list[str] | None:
        """The JSON-array form's words (CMD ["a", "b"]), or None for the shell form.

        Options (`--interval=30s`) and HEALTHCHECK's `CMD` keyword are skipped.
        """
        text = re.sub(r"^(?:--\S+\s+)*(?:CMD\s+)?", "", self.arguments.strip())
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        joined, current = [], ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not current and (not line or line.startswith("#")):
                continue  # comments and parser directives
            if current and line.startswith("#"):
                continue  # comments inside a continued instruction
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            joined.append(current + line)
            current = ""
        if current:
            joined.append(current)
        instructions = []
        for line in joined:
            keyword, _, arguments = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
        return cls(path, instructions)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        return self.all(keyword)[-1]

    def arg_defaults(self) -> dict[str, str]:
        defaults = {}
        for instruction in self.all("ARG"):
            name, _, value = instruction.arguments.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        return defaults

    def base_images(self) -> list[str]:
        """The images of the FROM lines, ARG defaults substituted (stage names left out)."""
        defaults = self.arg_defaults()
        stages: set[str] = set()
        images = []
        for instruction in self.all("FROM"):
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], words[0])
            if len(words) == 3 and words[1].lower() == "as":
                stages.add(words[2])
            if image not in stages:
                images.append(image)
        return images

    def pip_installs(self) -> list[list[str]]:
        """The words after `pip install` of every pip command in a RUN (options included)."""
        found = []
        for instruction in self.all("RUN"):
            words = instruction.exec_form() or shlex.split(instruction.arguments)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in {"&&", "||", ";", "|"}:
                    found.extend(_pip_install_arguments(command))
                    command = []
                else:
                    command.append(word)
        return found


def _pip_install_arguments(command: list[str]) -> list[list[str]]:
    for i, word in enumerate(command):
        is_pip = word in {"pip", "pip3"} or (
            word == "-m" and i + 1 < len(command) and command[i + 1] == "pip"
        )
        if not is_pip:
            continue
        rest = command[i + 1 :] if word != "-m" else command[i + 2 :]
        if rest[:1] == ["install"]:
            return [rest[1:]]
    return []


def requirements(pip_arguments: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split `pip install` arguments into requirement words and {option: [values]}."""
    requirement_words: list[str] = []
    options: dict[str, list[str]] = {}
    words = iter(pip_arguments)
    for word in words:
        if word.startswith("-"):
            name, equals, value = word.partition("=")
            if name in PIP_OPTIONS_WITH_VALUE:
                options.setdefault(name, []).append(value if equals else next(words))
            else:
                options.setdefault(name, [])
        else:
            requirement_words.append(word)
    return requirement_words, options
