"""Installation hygiene: facturd's import names are its own; layers import downwards only."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from daemon import selfcheck
from tests.conftest import ROOT


def test_no_other_distribution_owns_our_import_names() -> None:
    assert selfcheck.foreign_owners() == {}, (
        "another package installs 'daemon', 'rules' or 'storage' into this environment "
        "(python-daemon? django-rules?): install facturd in its own virtual environment")


def test_startup_self_check_refuses_a_shared_environment(tmp_path: Path) -> None:
    """GIVEN python-daemon's metadata visible on sys.path WHEN facturd starts THEN it exits 6
    naming the clash and the fix."""
    dist = tmp_path / "python_daemon-3.1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: python-daemon\nVersion: 3.1.2\n")
    (dist / "top_level.txt").write_text("daemon\n")
    (dist / "RECORD").write_text("daemon/__init__.py,,\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "daemon", "check-config"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert res.returncode == 6
    assert "python-daemon" in res.stderr and "own virtual environment" in res.stderr


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_downwards_only() -> None:
    allowed = {"rules": {"daemon", "storage"}, "storage": {"daemon", "rules"}}
    for package, forbidden in allowed.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imports_of(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in (ROOT / "daemon").rglob("*.py"):
        assert "peewee" not in imports_of(path), f"{path} uses peewee outside storage/"
        text = path.read_text()
        assert "storage.models" not in text and "from storage import models" not in text, (
            f"{path} uses the database models; queries belong in storage/")


def test_every_template_folder_is_installed_as_data() -> None:
    """A non-editable install finds templates under share/facturd/templates only when
    pyproject's data-files lists their folder: a new template folder must be listed."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["data-files"]
    listed = {target.removeprefix("share/facturd/") for target in data_files}
    folders = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "templates").rglob("*")
               if p.is_file() and p.suffix in (".html", ".txt")}
    assert folders and folders <= listed, sorted(folders - listed)
