"""``pip install .`` builds what an operator needs, without build warnings."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from barricade import __version__
from barricade.testing import PACKAGE_ROOT

pytestmark = pytest.mark.integration


def test_wheel_has_package_data_entry_points_licence_and_no_build_warning(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                          str(PACKAGE_ROOT)], capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    warnings = [ln for ln in (run.stdout + run.stderr).splitlines()
                if "Warning" in ln or ln.strip() == "!!" or "deprecated" in ln.lower()]
    assert warnings == []
    wheel = next(tmp_path.glob("barricade-*.whl"))
    assert wheel.name.startswith(f"barricade-{__version__}-")  # the one version, from barricade/__init__.py
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("barricade/state/lua/grey.lua", "barricade/state/lua/rate.lua",
                   "twisted/plugins/barricade_plugin.py", "barricade/plugins/clamd.py"):
        assert needed in names, needed
    # Every package of the source tree is in the wheel (a new one must join pyproject.toml).
    for init in sorted(PACKAGE_ROOT.glob("barricade/**/__init__.py")):
        assert init.relative_to(PACKAGE_ROOT).as_posix() in names, init
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in text and "Requires-Dist: publicsuffixlist" in text
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "barricade-check = barricade.explain:main" in entry
    assert any(n.endswith("licenses/LICENSE") for n in names)
