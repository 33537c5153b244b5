"""docs/smtpf.md stays true: an smtpf option it says Barricade has is registered with
the default it shows, and one it says Barricade lacks is not registered."""

from __future__ import annotations

import re
from pathlib import Path

from barricade import plugin
from barricade.options import REGISTRY

PAGE = Path(__file__).resolve().parents[2] / "docs/smtpf.md"
ROW = re.compile(r"^\| `([+-]?)([a-z][a-z0-9-]*)[^`]*` \| (yes: `([^`]*)`|no) \|", re.M)


def rows() -> list[tuple[str, str, str | None]]:
    return [(m.group(2), m.group(3)[:3].rstrip(":"), m.group(4)) for m in ROW.finditer(PAGE.read_text())]


def test_the_page_lists_smtpf_options():
    assert len(rows()) > 200


def test_what_the_page_says_barricade_has():
    plugin.prepare([])
    for name, has, ours in rows():
        if has == "yes":
            opt = REGISTRY.get(name)
            assert opt.format(opt.default) == ours, name
        else:
            assert name not in REGISTRY, f"{name}: docs/smtpf.md says Barricade lacks it"


def test_reply_differences_named_on_the_page_are_in_the_catalogue():
    from barricade.plugin import plugin_replies
    from barricade.replies import ENTRIES, Catalogue

    cat = Catalogue((*ENTRIES, *plugin_replies()))  # the shipped scanners' numbers are named too
    text = PAGE.read_text().split("## Replies", 1)[1]
    for rid in {int(n) for n in re.findall(r"#(\d{3})", text)}:
        assert rid in cat, rid
    assert (cat.spec(279).status, cat.spec(284).status) == ("5.1.0", "5.1.0")
    assert cat.spec(924).template == "HELO {helo} black listed"
