"""The README as a front door and the pages under docs/: the two commands as CI runs them, the size, no figure
typed by hand in the README, and every relative link (and its #anchor) pointing at something that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks._table import SCALE_BEGIN, SCALE_END
from tests.support import REPO

README = REPO / "README.md"
MAIN_JOB = "scripts/setup.sh && .venv/bin/seqrec-pipeline fetch-default-data && .venv/bin/seqrec-pipeline run"
TESTS = "scripts/setup.sh && .venv/bin/python -m pytest -q"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "examples" / "README.md", REPO / "benchmarks" / "README.md",
         *sorted((REPO / "benchmarks" / "notes").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def bash_blocks(text: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL) for line in block.splitlines()]


def test_the_readme_shows_the_main_job_and_the_test_command_verbatim() -> None:
    lines = bash_blocks(README.read_text())
    assert MAIN_JOB in lines and TESTS in lines


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == TESTS


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.encode()) < 12 * 1024 and len(text.splitlines()) <= 170
    # The scale figures are generated from the result files (tests/test_benchmarks_tools.py checks them).
    typed = text.replace(text[text.index(SCALE_BEGIN):text.index(SCALE_END)], "")
    prose = re.sub(r"```.*?```|`[^`]*`|<[^>]*>|Python \d+\.\d+", "", typed, flags=re.DOTALL)  # markup is not prose
    figures = re.findall(r"\d+\.\d{2,}|\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?x\b", prose)
    assert not figures, f"measured figures are generated from benchmarks/results/, never typed: {figures}"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"`|\*", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", body, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    body = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in LINK.findall(body):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(REPO)}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(REPO)}: no heading #{anchor} in {path or page.name}"
