"""The layering rules, checked on the source: no import circle, and the arrows point one way.

Protocol core and decision layer import no Twisted; nothing below the
decision layer imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "barricade"

#: Sans-IO modules: no Twisted, at module level or inside a function.
SANS_IO = ["client", "decide/__init__", "decide/outcome", "decide/rules", "decide/aggregate",
           "decide/identity", "protocol/session", "protocol/grammar", "protocol/data", "protocol/events",
           "protocol/message", "protocol/capabilities", "protocol/chunking",
           "protocol/client_identity", "protocol/client_cert", "protocol/downstream_tls",
           "protocol/proxy_protocol", "replies", "policy/verdict", "address", "decision_log", "admin"]
#: Modules below the decision layer: they must not import it.
BELOW_DECIDE = ["client", "replies", "options", "maps", "address", "protocol/session", "protocol/grammar",
                "protocol/*", "net/forward", "net/probe", "net/pool", "net/sendnow",
                "policy/*", "state/*", "dns", "spf", "aio"]


def modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def imports(rel: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{rel}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("rel", SANS_IO)
def test_sans_io_modules_import_no_twisted(rel):
    assert not [n for n in imports(rel) if n == "twisted" or n.startswith("twisted.")]


def test_nothing_below_the_decision_layer_imports_it():
    rels = []
    for pattern in BELOW_DECIDE:
        rels += [str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.glob(f"{pattern}.py")]
    assert len(rels) > 30
    offenders = {rel: n for rel in rels for n in imports(rel) if n.startswith("barricade.decide")}
    assert not offenders


def test_every_module_imports_first_on_its_own():
    """An import circle shows as an ImportError when one of its modules is imported first."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {modules()!r}:\n"
        "    for mod in [m for m in sys.modules if m == 'barricade' or m.startswith('barricade.')]:\n"
        "        del sys.modules[mod]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_decision_layer_loads_without_twisted():
    script = ("import sys\nimport barricade.decide.rules, barricade.decide.identity, barricade.client\n"
              "print(sorted(m for m in sys.modules if m.startswith('twisted')))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
