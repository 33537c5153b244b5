"""The plugin guide's example plugin and its harness test run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_guide_s_plugin_and_test_snippet_run_as_written(tmp_path):
    guide = (ROOT / "docs/plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    (tmp_path / "noexe_plugin.py").write_text(next(b for b in blocks if "class NoExe" in b))
    (tmp_path / "test_noexe.py").write_text(next(b for b in blocks if "PluginHarness(NoExe" in b))
    ini = re.search(r"```\n# pytest.ini\n(.*?)```", guide, re.S).group(1)
    (tmp_path / "pytest.ini").write_text(ini)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
