"""The README's install/test commands are what CI runs, and its Python example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_example_runs_as_written(tmp_path):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "README has a store example and a producer/consumer one"
    outputs = []
    for i, block in enumerate(blocks):
        script = tmp_path / f"example{i}.py"
        script.write_text(block, encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "[1, 2]" in outputs[0]
    assert "GetStatus.FOUND [b'{\"id\": 1}']" in outputs[0]
    assert "[b'{\"id\": 1}', b'second', b'third']" in outputs[0]


def test_ci_runs_the_readme_commands():
    text = README.read_text(encoding="utf-8")
    for marker in ("<!-- install -->", "<!-- test -->"):
        assert re.search(re.escape(marker) + r"\n```sh\n\S", text), marker
    ci = (README.parent / ".ci" / "run").read_text()
    assert "readme_cmd install" in ci and "readme_cmd test" in ci


def test_every_package_directory_is_listed_for_installation():
    """A subpackage missing from pyproject's `packages` works in an editable install
    and is missing from a real one (CI caught mqstore.client that way)."""
    root = README.parent
    packages = set(re.search(r"^packages = \[(.*)\]$", (root / "pyproject.toml").read_text(),
                             re.M).group(1).replace('"', "").replace(" ", "").split(","))
    found = {
        ".".join(path.parent.relative_to(root / "src").parts)
        for path in (root / "src" / "mqstore").rglob("*")
        if path.suffix in (".py", ".c") and "__pycache__" not in path.parts
    }
    assert found <= packages, found - packages
