"""Every config, route-map, access-map and reply-file example in the README and
docs/ loads as it is written: an operator pastes them, so none may fail.

Blocks are recognised by what they contain (``route:`` keys, access-map tags,
registered option names, ``NNN text`` reply lines), whatever their fence says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.logger import globalLogPublisher

from barricade import plugin
from barricade.maps import RouteMap
from barricade.options import REGISTRY, Registry
from barricade.policy.access import AccessMap
from barricade.policy.map_values import NUMERIC_TAGS
from barricade.replies import Catalogue

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
ACCESS_TAGS = {"connect", "helo", "from", "to", "body", "spamd", *NUMERIC_TAGS}
OPTION = re.compile(r"^(?:[+-](?P<flag>[a-z][a-z0-9-]+)|(?P<name>[a-z][a-z0-9-]*)\s*\+?=.*)$")

plugin.prepare([])  # plugin options are documented too


def declared_options(where: str) -> list[str]:
    """Options of an example plugin that the same document defines (``PluginOption("x"``)."""
    text = (ROOT / where.rsplit(":", 1)[0]).read_text(encoding="utf-8")
    return re.findall(r'PluginOption\("([a-z0-9-]+)"', text)


def registry_for(where: str) -> Registry:
    """The option registry, plus the options of the document's own example plugin."""
    registry = Registry()
    for opt in REGISTRY:
        registry.add(opt.name, opt.default, opt.help, section=opt.section, kind=opt.kind,
                     minimum=opt.minimum, choices=opt.choices)
    for name in declared_options(where):
        if name not in registry:
            registry.add(name, "", "an example plugin's option")
    return registry


def blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((path.relative_to(ROOT).as_posix(), line, m.group(1)))
    return out


def content(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def kind(block: str) -> str | None:
    lines = content(block)
    if not lines:
        return None
    if any(ln.lower().startswith("route:") for ln in lines):
        return "route-map"
    if all(ln.split()[0].partition(":")[0].lower() in ACCESS_TAGS and ":" in ln.split()[0]
           for ln in lines):
        return "access-map"
    if all(re.match(r"\d{3} ", ln) for ln in lines):
        return "reply-file"
    names = [m.group("flag") or m.group("name") for m in map(OPTION.match, lines) if m]
    if names and len(names) == len(lines) and any(n in REGISTRY for n in names):
        return "config"
    return None


EXAMPLES = [(f"{where}:{line}", kind(block), block) for where, line, block in blocks() if kind(block)]


def test_the_docs_have_examples_of_every_kind():
    kinds = {k for _, k, _ in EXAMPLES}
    assert {"route-map", "access-map", "reply-file"} <= kinds, kinds


@pytest.mark.parametrize("where, what, block", EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_example_loads(where, what, block, tmp_path):
    path = tmp_path / what
    if what == "route-map" and not any(ln.lower().startswith(("route:local", "route:127.0.0.1"))
                                      for ln in content(block)):
        block = "route:local FORWARD: 127.0.0.1:25\n" + block  # a fragment of a route map
    path.write_text(block, encoding="utf-8")
    if what == "route-map":
        assert len(RouteMap(str(path))) == len(content(block))
    elif what == "access-map":
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        try:
            AccessMap(str(path))
        finally:
            globalLogPublisher.removeObserver(events.append)
        ignored = [e for e in events if "ignored" in e.get("log_format", "")]
        assert ignored == [], ignored[0]["problems"] if ignored else ""
    elif what == "reply-file":
        Catalogue.from_file(path)
    else:
        registry_for(where).parse(config_file=path)


def test_kind_recognises_what_a_paste_would_break():
    assert kind("route:local FORWARD: 127.0.0.1:26   # required\n") == "route-map"
    assert kind("connect:192.168 OK   # white list\n") == "access-map"
    assert kind("+rfc1652-8bitmime\nmessage-size-limit=10240000\n") == "config"
    assert kind("twistd -n barricade --config /etc/barricade/barricade.cf\n") is None


def test_sources_cite_only_documents_in_the_repository():
    """Docstrings and comments point to README.md and docs/, never to papers that
    are not in the repository (the reply-list seed of test_replies is in tests/data)."""
    outside = re.compile(r"(?<![/(])\b(smtpf|scanners|peers|engineering|components|bench-peers)\.md\b"
                         r"|DESIGN\.md|§|/work/shared")
    found = []
    for folder in ("barricade", "plugins", "tests", "twisted", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".lua", ".md") or path.name == "test_docs_examples.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if outside.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_shipped_config_files_load():
    """conf/ holds files an operator copies as they are."""
    assert len(RouteMap(str(ROOT / "conf/route-map"))) >= 2
    for name in ("example.cf", "barricade.cf"):
        REGISTRY.parse(config_file=ROOT / "conf" / name)
