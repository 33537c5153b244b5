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


def test_the_guide_s_immediate_hook_example_runs_as_written(tmp_path):
    guide = (ROOT / "docs/plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    (tmp_path / "bounce_plugin.py").write_text(next(b for b in blocks if "@immediate" in b))
    (tmp_path / "test_bounce.py").write_text(
        "import pytest_twisted\n"
        "from barricade.api import PluginHarness\n"
        "from bounce_plugin import OneBounceRecipient\n\n"
        "@pytest_twisted.ensureDeferred\n"
        "async def test_a_bounce_to_two_is_refused_at_the_second():\n"
        "    assert OneBounceRecipient.rcpt.immediate  # marked: the pipeline calls it as a function\n"
        "    msg = b'Subject: x\\r\\n\\r\\nhi\\r\\n'\n"
        "    two = ['a@example.com', 'b@example.com']\n"
        "    bounce = await PluginHarness(OneBounceRecipient).message(msg, sender='', rcpts=two)\n"
        "    rcpts = [r for event, r in bounce.replies if event.startswith('rcpt')]\n"
        "    assert [(r.code, r.status, r.id) for r in rcpts][1] == (550, '5.7.1', 1020)\n"
        "    assert rcpts[0].code == 250 and rcpts[1].text == 'a bounce goes to one recipient'\n"
        "    mail = await PluginHarness(OneBounceRecipient).message(msg, rcpts=two)\n"
        "    assert [r.code for event, r in mail.replies if event.startswith('rcpt')] == [250, 250]\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --reactor=asyncio\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
