"""The one YAML reader (dsgd_operator.yaml_reader) and `dsgd validate` on mangled files.

Each break found by the issue-14 probe is a test here; the fuzz test feeds
1,500 generated text mutants of the examples to `dsgd validate` and asserts
that every one ends in exit 0 or exit 1 with one line per problem, each naming
the file: never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path

import pytest
from dsgd_operator import cli
from dsgd_operator.manifest import ManifestError, load_jobs
from dsgd_operator.yaml_reader import MAX_DEPTH, YamlProblem, read_documents

from tests._yaml_mutants import yaml_mutants
from tests.conftest import EXAMPLES

JOB = """\
apiVersion: dsgd.io/v1alpha1
kind: DistributedSGDJob
metadata:
  name: job
spec:
  topology:
    nodes: 2
{extra}"""


def refusal(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "job.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ManifestError) as refused:
        load_jobs(path)
    message = str(refused.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def test_a_key_written_twice_is_refused_not_merged(tmp_path: Path) -> None:
    # PyYAML kept the last value: `nodes: 2` then `nodes: 500` was a valid 500-node job.
    message = refusal(tmp_path, JOB.format(extra="    nodes: 500\n"))
    assert message == "spec.topology.nodes, line 8, column 5: duplicate key (first at line 7)"


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    message = refusal(tmp_path, JOB.format(extra=f"  template:\n    labels: {deep}\n"))
    assert message.endswith(f"nested deeper than {MAX_DEPTH} levels")
    assert message.startswith("spec.template.labels[0][0]")


def test_a_date_is_a_string_as_kubectl_reads_it(tmp_path: Path) -> None:
    # PyYAML made a datetime.date of it, and crashed (ValueError) on 2024-02-30.
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(extra="  scheduling:\n    queue: 2024-02-30\n"))
    assert load_jobs(path)[0].spec.scheduling.queue == "2024-02-30"


def test_a_tag_the_value_does_not_fit_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, JOB.format(extra="    processesPerNode: !!int x\n"))
    assert message == "spec.topology.processesPerNode, line 8, column 23: 'x' is not a valid int"


@pytest.mark.parametrize("word", ["on", "Off", "yes", "NO", "y", "n"])
def test_yaml_1_1_booleans_are_refused_with_what_to_write(tmp_path: Path, word: str) -> None:
    message = refusal(tmp_path, JOB.format(extra=f"  runPolicy:\n    suspend: {word}\n"))
    assert message.startswith(f"spec.runPolicy.suspend, line 9, column 14: {word!r} is a boolean")
    assert "write true or false, or quote it" in message


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x10", 16),
        ("1e3", 1000.0),
        ("'on'", "on"),
        ("1:30", "1:30"),
        ("12:30:00", "12:30:00"),
        ("!!str 3", "3"),
        ("!!float 2", 2.0),
        ("~", None),
        ("=", "="),
    ],
)
def test_unambiguous_scalars_read_as_kubectl_reads_them(text: str, value: object) -> None:
    assert read_documents(f"a: {text}") == [{"a": value}]


@pytest.mark.parametrize("text", ["0755", "0o17", "0b11", "1_000", ".inf", "-.Inf", ".nan"])
def test_numbers_yaml_readers_disagree_on_are_refused(text: str) -> None:
    with pytest.raises(YamlProblem, match=r"^a, line 1, column 4: "):
        read_documents(f"a: {text}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !!python/object/apply:os.system [id]", "is not supported here"),
        ("a: !!binary aGk=", "is not supported here"),
        ("a: &x [*x]", "lies inside its anchor"),
        ("1: x", "keys must be strings"),
        ("a: *nowhere", "undefined alias"),
    ],
)
def test_tags_aliases_and_keys_json_cannot_carry_are_refused(text: str, expected: str) -> None:
    with pytest.raises(YamlProblem, match=expected):
        read_documents(text)


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = ["lol0: &lol0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(YamlProblem, match="more than 100000 values"):
        read_documents("\n".join(bomb))


def test_too_large_and_not_utf8_are_one_line(tmp_path: Path) -> None:
    assert refusal(tmp_path, b"a: " + b"x" * 2_000_000).startswith("larger than 1536 KiB")
    assert refusal(tmp_path, b"a: \xff\xfe").startswith("not UTF-8 text (byte 3")
    assert "unacceptable character #x0007" in refusal(tmp_path, "a: \x07")


MUTANTS = 1_500
SEED = 14


def validate_in_process(path: Path) -> tuple[int | None, str, str, str | None]:
    """`dsgd validate PATH` in this process: (exit code, stdout, stderr, traceback if any)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["validate", str(path)])
        except BaseException:  # exactly what must never happen
            return None, out.getvalue(), err.getvalue(), traceback.format_exc()
    return code, out.getvalue(), err.getvalue(), None


def test_generated_text_mutants_never_crash_dsgd_validate(tmp_path: Path) -> None:
    texts = [path.read_text() for path in sorted(EXAMPLES.glob("*.yaml"))]
    counts = {"accepted": 0, "refused": 0, "crashed": 0}
    crashes = []
    for index, content in enumerate(yaml_mutants(texts, MUTANTS, SEED)):
        path = tmp_path / f"mutant-{index}.yaml"
        path.write_bytes(content)
        code, out, err, crash = validate_in_process(path)
        lines = err.splitlines()
        if crash or "Traceback" in out + err or code not in (0, 1):
            counts["crashed"] += 1
            crashes.append(f"{path.name}: {crash or err}")
        elif code == 0:
            counts["accepted"] += 1
            assert out.startswith(f"{path}: valid"), out
        else:
            counts["refused"] += 1
            assert lines, f"{path.name}: exit 1 without saying why"
            stray = [line for line in lines if not line.startswith(f"{path}: ")]
            assert not stray, f"{path.name}: lines that do not name the file: {stray}"
    print(f"text mutants: {MUTANTS}, {counts}")
    assert crashes == [], f"{len(crashes)} crashed:\n" + "\n".join(crashes[:5])
    # Both verdicts often enough for the test to mean something.
    assert counts["accepted"] > 50 and counts["refused"] > 500, counts  # 103 and 1,397 with seed 14
