"""The README's examples and the answers it prints: found, run, compared and reprinted.

An example is a `curl` command in a ```sh block, whose answer is the `# ...` line right after
it, or a ```python block, whose answer is the trailing comment of its last line (an expression).
Examples are run as printed with one change: the README's `localhost:8000` (and gRPC's
`localhost:8081`) becomes the address of a server the test suite started, so they never depend
on a port being free.

An answer matches when the text is the same except that every number need only agree to the
precision printed (`4.3184` matches 4.318370342) and `...` stands for any elided text.

When the models change, the README's answers change with them. To see the new ones in the
README's own shape (same precision, same elisions), or to write them into README.md:

    .venv/bin/python -m tests.readme_examples --print
    .venv/bin/python -m tests.readme_examples --write

Both run tests/test_readme_examples.py, which records what the service answered.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal, cast

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_ADDRESS = "localhost:8000"
README_GRPC_ADDRESS = "localhost:8081"
ANSWER_PROPERTY = "readme_answer"
_NUMBER = r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_ELIDED = "..."
_TOKENS = re.compile(f"({_NUMBER}|{re.escape(_ELIDED)})")


class ReadmeError(ValueError):
    """An example the README shows without the answer it gives."""


@dataclass(frozen=True)
class Example:
    kind: Literal["sh", "python"]
    line: int  # README line (1-based) where the example starts
    code: str
    answer: str
    answer_line: int  # README line holding the answer, from `answer_column` to its end
    answer_column: int

    @property
    def needs_key(self) -> bool:
        """Administrative examples send `$KEY`: they need a server started with an API key."""
        return "$KEY" in self.code

    def run(self, address: str, key: str, grpc_address: str = README_GRPC_ADDRESS) -> str:
        """What the example prints when run against the server at `address` ("host:port"), whose
        gRPC service is at `grpc_address`."""
        code = self.code.replace(README_ADDRESS, address).replace(README_GRPC_ADDRESS, grpc_address)
        command = ["bash", "-c", code] if self.kind == "sh" else [sys.executable, "-c", _printing(code)]
        done = subprocess.run(
            command, cwd=REPO, env={**os.environ, "KEY": key}, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"README.md:{self.line} exited {done.returncode}:\n{done.stderr}")
        return done.stdout.strip()


def examples(text: str) -> list[Example]:
    """Every curl command and Python block of a README, in order."""
    found: list[Example] = []
    for language, start, lines in _fenced_blocks(text):
        if language == "sh":
            found.extend(_curl_examples(start, lines))
        elif language == "python":
            found.append(_python_example(start, lines))
    return found


def _fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, README line of the block's first line, the block's lines)."""
    language: str | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if language is None and line.startswith("```"):
            language, body, start = line[3:].strip(), [], number + 1
        elif language is not None and line.startswith("```"):
            yield language, start, body
            language = None
        elif language is not None:
            body.append(line)


def _curl_examples(start: int, lines: list[str]) -> Iterator[Example]:
    index = 0
    while index < len(lines):
        if not lines[index].startswith("curl "):
            index += 1
            continue
        first = index
        while lines[index].rstrip().endswith("\\"):
            index += 1
        code = "\n".join(lines[first : index + 1])
        index += 1
        answer = lines[index] if index < len(lines) else ""
        if not answer.startswith("# "):
            raise ReadmeError(f"README.md:{start + first}: a curl example needs a '# answer' line after it")
        yield Example("sh", start + first, code, answer[2:], start + index, 2)


def _python_example(start: int, lines: list[str]) -> Example:
    code = "\n".join(lines)
    last = ast.parse(code).body[-1]
    comments = [
        token
        for token in tokenize.generate_tokens(io.StringIO(code).readline)
        if token.type == tokenize.COMMENT and token.start[0] == last.end_lineno
    ]
    if not isinstance(last, ast.Expr) or not comments:
        raise ReadmeError(f"README.md:{start}: the Python example must end in an expression and '# answer'")
    row, column = comments[0].start
    return Example("python", start, code, comments[0].string[2:], start + row - 1, column + 2)


def _printing(code: str) -> str:
    """The snippet with its last expression printed, as the interactive prompt would show it."""
    last = ast.parse(code).body[-1]
    assert isinstance(last, ast.Expr)
    setup = code.splitlines()[: last.lineno - 1]
    return "\n".join([*setup, f"print(repr({ast.get_source_segment(code, last.value)}))"])


def _split(printed: str) -> list[str]:
    """Literal text at even indexes; numbers and `...` at odd ones."""
    return _TOKENS.split(printed)


def _pattern(parts: list[str]) -> re.Pattern[str]:
    return re.compile(
        "".join(
            re.escape(part) if index % 2 == 0 else ".*?" if part == _ELIDED else f"({_NUMBER})"
            for index, part in enumerate(parts)
        ),
        re.DOTALL,
    )


def _printed_numbers(parts: list[str]) -> list[str]:
    return [part for part in parts[1::2] if part != _ELIDED]


def _places(number: str) -> int:
    """The exponent of a number's last printed digit: -4 for 4.3184, 0 for 5."""
    return int(Decimal(number).as_tuple().exponent)


def _agrees(printed: str, actual: str) -> bool:
    """`actual` rounds to `printed` at the precision printed."""
    return abs(Decimal(actual) - Decimal(printed)) <= Decimal(5).scaleb(_places(printed) - 1)


def matches(printed: str, actual: str) -> bool:
    parts = _split(printed)
    match = _pattern(parts).fullmatch(actual)
    return match is not None and all(map(_agrees, _printed_numbers(parts), match.groups()))


def reprint(printed: str, actual: str) -> str:
    """`actual` in the shape of `printed`: its numbers at the printed precision, its elisions kept.
    The whole of `actual` where the shape no longer fits (a field added, say)."""
    parts = _split(printed)
    match = _pattern(parts).fullmatch(actual)
    if match is None:
        return actual
    numbers = iter(match.groups())
    return "".join(
        part if index % 2 == 0 or part == _ELIDED else _at_precision(next(numbers), part)
        for index, part in enumerate(parts)
    )


def _at_precision(actual: str, printed: str) -> str:
    places = _places(printed)
    return str(Decimal(actual).quantize(Decimal(1).scaleb(places))) if _places(actual) < places else actual


def rewrite(text: str, answers: dict[Example, str]) -> str:
    """The README with each given example's printed answer replaced."""
    lines = text.splitlines(keepends=True)
    for example, answer in answers.items():
        printed = lines[example.answer_line - 1]
        lines[example.answer_line - 1] = printed[: example.answer_column] + answer + "\n"
    return "".join(lines)


class _Recorder:
    """A pytest plugin that keeps the answers the test recorded, by README line."""

    def __init__(self) -> None:
        self.answers: dict[int, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == ANSWER_PROPERTY:
                line, answer = cast(tuple[int, str], value)
                self.answers[line] = answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What the service now answers to the README's examples.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--print", action="store_true", help="show every example's answer, old and new")
    action.add_argument("--write", action="store_true", help="write the new answers into README.md")
    args = parser.parse_args(argv)
    recorder = _Recorder()
    test = Path(__file__).with_name("test_readme_examples.py")
    pytest.main([str(test), "-q", "--tb=no", "-p", "no:cacheprovider"], plugins=[recorder])
    text = README.read_text()
    found = {example.answer_line: example for example in examples(text)}
    missing = sorted(set(found) - set(recorder.answers))
    if missing:
        print(f"no answer recorded for the examples answered at README.md lines {missing}", file=sys.stderr)
        return 1
    if args.write:
        drifted = {e: new for line, e in found.items() if (new := recorder.answers[line]) != e.answer}
        README.write_text(rewrite(text, drifted))
        print(f"README.md: {len(drifted)} answer(s) rewritten")
        return 0
    for line, example in sorted(found.items()):
        new = recorder.answers[line]
        print(f"README.md:{line} {'unchanged' if new == example.answer else 'CHANGED'}\n  # {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
