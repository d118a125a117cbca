"""Every Python sample in docs/*.md runs as written, so the docs cannot rot.

The blocks of one page run in order in one fresh interpreter (a later block may use
what an earlier one defined), in a temporary working directory. A block right after a
``<!-- not-run: reason -->`` line is skipped (fragments that need a service around
them); each such marker must give its reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"(<!-- not-run:([^>]*)-->\n)?```python\n(.*?)```", re.S)


def runnable_blocks(text: str):
    blocks = []
    for match in BLOCK.finditer(text):
        skipped, reason, code = match.group(1), match.group(2), match.group(3)
        if skipped:
            assert reason.strip(), "a not-run marker must say why"
            continue
        blocks.append(code)
    return blocks


PAGES_WITH_CODE = [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.name)
def test_doc_samples_run(page, tmp_path):
    script = tmp_path / "sample.py"
    script.write_text("\n\n".join(runnable_blocks(page.read_text(encoding="utf-8"))),
                      encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{page.name}:\n{done.stdout}\n{done.stderr}"


def test_docs_have_samples():
    assert len(PAGES_WITH_CODE) >= 2, [p.name for p in PAGES_WITH_CODE]


def test_mkdocs_nav_lists_every_page_and_only_existing_ones():
    nav = re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = {p.name for p in PAGES}
    assert set(nav) <= pages, set(nav) - pages
    assert pages <= set(nav), pages - set(nav)


def test_relative_links_between_docs_resolve():
    for page in PAGES + [ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}"
