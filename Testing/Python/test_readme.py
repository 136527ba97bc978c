"""The README as a user meets it: short, every link resolves, every code block runs as written or says why not.

The command-line and Python examples run in a folder that has ``../shared`` beside it, as the
repository has, so their relative paths mean what they say and their files land in a temporary folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
#: A code block's marker, on the line before it: who runs it, or why nobody does.
MARKER = re.compile(r"<!-- (run|not run): (.+?) -->\n```[a-z]*\n(.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str, str]]:
    return MARKER.findall(text)


def test_the_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page.name != "README.md"
    missing = []
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve()
        if not path.exists():
            missing.append(link)
        elif anchor and path.suffix == ".md":
            headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
            if anchor not in headings:
                missing.append(link)
    assert missing == []


def test_every_readme_code_block_is_run_by_a_test_or_says_why_not():
    text = README.read_text()
    assert text.count("```") // 2 == len(blocks(text)), "a code block without its <!-- run: ... --> marker"
    tests = "\n".join(p.read_text() for p in (REPO / "Testing" / "Python").glob("test_*.py"))
    for kind, who, _ in blocks(text):
        if kind == "not run":
            assert len(who) > 20, who  # the reason, in words
        elif who.startswith(".ci/run"):
            assert ".venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text()
        else:
            assert f"def {who}(" in tests, who


@pytest.fixture
def beside_shared(tmp_path, data):
    """A working folder with ``../shared`` beside it (the shared data), like the repository's."""
    (tmp_path / "shared").symlink_to(data.parent)
    work = tmp_path / "work"
    work.mkdir()
    return work


def readme_block(name: str) -> str:
    return next(code for kind, who, code in blocks(README.read_text()) if who == name)


def test_the_command_line_examples_run_as_written(beside_shared):
    lines = [line for line in readme_block("test_the_command_line_examples_run_as_written").splitlines() if line.strip()]
    assert lines and all(line.startswith("lunggan ") for line in lines)
    for line in lines:
        done = subprocess.run([sys.executable, "-m", "LungGANLib.cli", *shlex.split(line)[1:]], cwd=beside_shared,
                              capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        assert "Traceback" not in done.stderr
    written = {p.relative_to(beside_shared).as_posix() for p in beside_shared.rglob("*") if p.is_file()}
    assert {"lungs.nii.gz", "lungs.png", "lungs.csv", "lungs.dcm", "lung1.nii.gz", "lungs_review.json", "review.png"} <= written
    assert {"masks/elastix-00_lungs.nii.gz", "masks/lung-pet-ct-dx-a0001-series2_lungs.nii.gz"} <= written
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(beside_shared / "lungs.nii.gz")))
    assert set(labels.ravel().tolist()) == {0, 1, 2}


def test_the_python_example_runs_as_written(beside_shared, monkeypatch):
    monkeypatch.chdir(beside_shared)
    code = readme_block("test_the_python_example_runs_as_written")
    exec(compile(code, "README.md", "exec"), {})
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(beside_shared / "lungs.nii.gz")))
    assert set(labels.ravel().tolist()) == {0, 1, 2}
