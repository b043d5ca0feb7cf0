"""Every code block of README.md and docs/*.md runs, and every command the docs show succeeds.

The blocks are read from the markdown itself, so an example that stops working fails here. One test per
block:

- `python` blocks run in one namespace per page, in page order, so a block may continue an earlier one;
- `bash` blocks run in a shell, and every `$ command` line of a `text` block runs with the output shown
  below it as the expectation of success (`keras-mnas: error:` in it means the command must fail with that
  error);
- the blocks of a page share a temporary working directory, in which `keras-mnas` and `python` are this
  checkout's, and `examples/` and `benchmarks/` are at hand.

A block that cannot run here is marked on the line above it, and pytest shows the reason as a skip (a
skipped Python block must still parse, and its imports resolve):

    <!-- skip: needs a phone -->

A block that shows an error is marked with the exception it must raise:

    <!-- raises: ValueError -->

A block that needs an installed program runs where it is installed; elsewhere it is skipped with the
reason, and under CI=true (where CI installs it) it fails:

    <!-- requires: adb -->

`mermaid` blocks (diagrams) and blocks without a language (printed output) are not code.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import traceback

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash", "text")
NOT_CODE = ("mermaid", "")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip|raises|requires)\s*:\s*(?P<value>.*?)\s*-->\s*$")
ANY_MARKER = re.compile(r"^\s*<!--\s*(skip|raises|requires)\b")
COMMAND_TIMEOUT_S = 900


@dataclasses.dataclass
class Block:
    """One fenced code block of a markdown page."""

    page: pathlib.Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None
    raises: str | None = None
    requires: str | None = None  # programs it needs, comma-separated

    def missing(self) -> str | None:
        """Why this block cannot run here (a program it requires is not installed), or None."""
        names = [name.strip() for name in self.requires.split(",")] if self.requires else []
        absent = [name for name in names if shutil.which(name) is None]
        return f"needs the `{'`, `'.join(absent)}` program, which is not installed" if absent else None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}-{self.lang or 'output'}"

    def commands(self) -> list[tuple[str, bool]]:
        """The commands of a `text` block: (command, whether the output shown is a keras-mnas error)."""
        found = []
        for line in self.code.splitlines():
            if line.startswith("$ "):
                found.append([line[2:].strip(), False])
            elif found and "keras-mnas: error:" in line:
                found[-1][1] = True
        return [(command, fails) for command, fails in found]

    @property
    def runnable(self) -> bool:
        return self.lang in ("python", "bash") or bool(self.lang == "text" and self.commands())


def parse_blocks(page: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a page, with the marker written on the line above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            if ANY_MARKER.match(lines[index]) and not _marks_a_block(lines, index):
                raise ValueError(f"{page.name}:{index + 1}: a marker must sit right above a code block.")
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body, end = [], index + 1
        while end < len(lines) and lines[end].strip() != fence:
            # Blocks inside list items are indented: strip the fence's indentation.
            body.append(lines[end][len(indent):] if lines[end].startswith(indent) else lines[end].lstrip())
            end += 1
        if end == len(lines):
            raise ValueError(f"{page.name}:{index + 1}: code block never closed.")
        block = Block(page, index + 1, opening["lang"], "\n".join(body) + "\n")
        marker = MARKER.match(lines[index - 1]) if index else None
        if marker:
            if not marker["value"]:
                raise ValueError(f"{page.name}:{index}: a {marker['kind']} marker needs a value.")
            setattr(block, marker["kind"], marker["value"])
        blocks.append(block)
        index = end + 1
    return blocks


def _marks_a_block(lines: list[str], index: int) -> bool:
    return index + 1 < len(lines) and bool(FENCE.match(lines[index + 1]))


ALL_BLOCKS = [block for page in PAGES for block in parse_blocks(page)]
CODE_BLOCKS = [block for block in ALL_BLOCKS if block.runnable]


class PageRun:
    """Runs one page's blocks in order, in one namespace and one working directory."""

    def __init__(self, page: pathlib.Path, directory: pathlib.Path):
        self.blocks = [block for block in CODE_BLOCKS if block.page == page]
        self.directory = directory
        self.namespace: dict = {"__name__": "__main__"}
        self.done: set[int] = set()  # positions in self.blocks that ran (or are skipped)
        self.failed: Block | None = None
        bin_dir = directory / ".bin"
        bin_dir.mkdir()
        for name, command in (("keras-mnas", "-m keras_mnas"), ("python", ""), ("python3", "")):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {command} "$@"\n')
            script.chmod(0o755)
        for name in ("examples", "benchmarks"):
            (directory / name).symlink_to(REPO / name)
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            TF_CPP_MIN_LOG_LEVEL="2",
            # adbutils must never start a real adb server on the test machine.
            ADBUTILS_ADB_PATH=shutil.which("true") or "/bin/true",
        )

    def run_until(self, block: Block) -> None:
        """Runs the blocks before `block` that have not run, then `block` itself."""
        position = self.blocks.index(block)
        for earlier in self.blocks[:position]:
            if self.failed is not None:
                break
            if self.blocks.index(earlier) not in self.done and earlier.skip is None and not earlier.missing():
                try:
                    self._run(earlier)
                except BaseException:
                    self.failed = earlier
                    raise
            self.done.add(self.blocks.index(earlier))
        if self.failed is not None:
            pytest.fail(f"an earlier block of this page failed ({self.failed.id}); this one may depend on it")
        self.done.add(position)
        try:
            self._run(block)
        except BaseException:
            self.failed = block
            raise

    def _run(self, block: Block) -> None:
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.chdir(self.directory)
        os.environ["ADBUTILS_ADB_PATH"] = self.env["ADBUTILS_ADB_PATH"]
        try:
            if block.lang == "python":
                self._run_python(block)
            elif block.lang == "bash":
                self._run_shell(block.code, expect_error=False, block=block)
            else:
                for command, expect_error in block.commands():
                    self._run_shell(command, expect_error=expect_error, block=block)
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)

    def _run_python(self, block: Block) -> None:
        code = compile(block.code, f"{block.id}", "exec")
        if block.raises is None:
            exec(code, self.namespace)
            return
        try:
            exec(code, self.namespace)
        except Exception as error:  # the marker names the class; compare names along its MRO
            names = [cls.__name__ for cls in type(error).__mro__]
            if block.raises not in names:
                raise AssertionError(
                    f"{block.id} should raise {block.raises}; it raised {type(error).__name__}:\n"
                    + "".join(traceback.format_exception(error))
                ) from error
            return
        raise AssertionError(f"{block.id} should raise {block.raises}; it raised nothing.")

    def _run_shell(self, script: str, *, expect_error: bool, block: Block) -> None:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        report = f"{block.id}: `{script.strip()}` exited {result.returncode}\n{result.stdout}{result.stderr}"
        if expect_error:
            assert result.returncode == 1, report
            assert "keras-mnas: error:" in result.stderr, report
        else:
            assert result.returncode == 0, report


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    return {
        page: PageRun(page, tmp_path_factory.mktemp(page.stem.lower()))
        for page in PAGES
        if any(block.page == page for block in CODE_BLOCKS)
    }


@pytest.mark.parametrize("block", CODE_BLOCKS, ids=lambda block: block.id)
def test_block_runs(block, page_runs):
    if block.skip is not None:
        if block.lang == "python":
            # What can run without the phone or the file still must: the code parses and its imports resolve.
            tree = ast.parse(block.code, block.id)
            imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(imports, type_ignores=[]), block.id, "exec"), {})
        pytest.skip(f"{block.id}: {block.skip}")
    missing = block.missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{block.id}: CI=true, but it {missing}.", pytrace=False)
        pytest.skip(f"{block.id}: {missing}")
    page_runs[block.page].run_until(block)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda block: block.id)
def test_every_block_is_code_or_output(block):
    # A block of another language would be silently left out of test_block_runs.
    assert block.lang in RUNNABLE + NOT_CODE, f"{block.id}: unknown language {block.lang!r}"
    assert block.runnable or (block.skip is None and block.raises is None and block.requires is None), (
        f"{block.id}: only code blocks take a skip, raises or requires marker"
    )
    if block.lang == "text" and not block.runnable:
        # Text without commands is printed output or a synopsis: it must not hide a command.
        assert not re.search(r"^\s*(keras-mnas|python3?) \S", block.code, re.MULTILINE) or (
            "[" in block.code
        ), f"{block.id}: a command in a text block needs a '$ ' prompt to be run"


def test_markers_are_parsed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- skip: needs a phone -->\n```python\nphone()\n```\n\n"
        "- item\n\n  <!-- raises: ValueError -->\n  ```python\n  int('x')\n  ```\n\n"
        "```text\n$ keras-mnas devices --adb-port 1\nkeras-mnas: error: No adb server\n"
        "$ keras-mnas results r\n```\n"
    )
    skipped, raising, shown = parse_blocks(page)
    assert (skipped.line, skipped.skip, skipped.code) == (4, "needs a phone", "phone()\n")
    assert (raising.raises, raising.code) == ("ValueError", "int('x')\n")
    assert shown.commands() == [("keras-mnas devices --adb-port 1", True), ("keras-mnas results r", False)]
    page.write_text("<!-- requires: adb, no-such-program-here -->\n```python\nprint(1)\n```\n")
    [needing] = parse_blocks(page)
    assert needing.requires == "adb, no-such-program-here"
    assert "`no-such-program-here`" in needing.missing()
    page.write_text("<!-- skip: nothing below -->\n\nText.\n")
    with pytest.raises(ValueError, match="right above a code block"):
        parse_blocks(page)
