"""The table of which verdicts carry which named reply (``replies.USES``).

Start-up refuses a catalogue where a REJECT would carry a 2xx or 4xx reply
(or a TEMPFAIL a 5xx); these tests keep the table in step with the
verdicts the checks really build, by reading their source.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from barricade.policy import access, dupmsg, grey, message_limits, state_limits
from barricade.replies import ENTRIES, FITS, USES, Catalogue, CatalogueError, ReplyId, check_catalogue

ROOT = Path(__file__).resolve().parents[2]
#: Calls whose first argument is the reply id, and the action they build.
HELPERS = {"reject": {"reject"}, "ireject": {"reject"}, "delayable_reject": {"reject"},
           "tempfail": {"tempfail"}, "drop": {"drop"}, "CheckError": {"tempfail"},
           "ScannerError": {"tempfail"}, "refuse": {"drop", "tempfail"}}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("ReplyId", "R"):
        return node.attr
    return None


def verdicts_in_source() -> set[tuple[str, str, str]]:
    """(action, ReplyId name, file) for every verdict built with a named reply."""
    found = set()
    for path in sorted([*(ROOT / "barricade").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            rel = str(path.relative_to(ROOT))
            if fname in HELPERS and _name(node.args[0]):
                actions = set(HELPERS[fname])
                for kw in node.keywords:
                    if kw.arg == "action" and isinstance(kw.value, ast.Attribute):
                        actions = {kw.value.attr.lower()}
                found |= {(a, _name(node.args[0]), rel) for a in actions}
            elif fname == "Verdict" and len(node.args) >= 2 and _name(node.args[1]):
                action = node.args[0]
                if isinstance(action, ast.Attribute) and getattr(action.value, "id", "") == "Action":
                    found.add((action.attr.lower(), _name(node.args[1]), rel))
    return found


def test_the_source_was_read():
    found = verdicts_in_source()
    assert ("reject", "MAIL_LOOP", "barricade/policy/limits.py") in found
    assert ("drop", "DNS_BL_LISTED", "barricade/policy/dnsbl.py") in found
    assert len(found) > 40


def test_every_verdict_with_a_named_reply_is_in_the_table():
    missing = sorted((action, name, where) for action, name, where in verdicts_in_source()
                     if action in FITS and action not in USES.get(ReplyId[name], ()))
    assert missing == []


def test_indirect_uses_are_in_the_table():
    """Replies chosen through a table or a class attribute rather than a call."""
    for check in (access.AccessConnect, access.AccessHelo, access.AccessMail, access.AccessRcpt):
        tables = [v for v in vars(check).values() if isinstance(v, access.Replies)]
        assert tables, check
        for table in tables:
            assert "reject" in USES[table.reject] and "reject" in USES[table.ireject]
            assert "tempfail" in USES[table.tempfail]
            if check in (access.AccessConnect, access.AccessHelo):  # reply, then close
                assert {"drop"} <= USES[table.reject] & USES[table.ireject] & USES[table.tempfail]
    store_checks, todo = [], [state_limits.StoreCheck]
    while todo:
        cls = todo.pop()
        store_checks.append(cls)
        todo.extend(cls.__subclasses__())
    assert {message_limits.MsgLimit, grey.GreyList, dupmsg.DuplicateMessage} <= set(store_checks)
    for check in store_checks:
        assert {"tempfail", "drop"} <= USES[check.failure_reply], check
    assert "reject" in USES[access.TRAPPED]


def test_the_shipped_catalogue_fits_the_table():
    check_catalogue(Catalogue())


@pytest.mark.parametrize("rid, code, status, message", [
    (ReplyId.CLIENT_BLACK_LISTED, 450, "4.7.1",
     r"^reply #120 is a 450: a REJECT verdict cannot carry it \(CLIENT_BLACK_LISTED\)$"),
    (ReplyId.GREY_LISTED, 550, "5.7.1", r"^reply #552 is a 550: a TEMPFAIL verdict cannot carry it"),
    (ReplyId.DNS_BL_LISTED, 250, "2.0.0", r"^reply #525 is a 250: a DROP verdict cannot carry it"),
])
def test_a_reply_of_the_wrong_class_is_a_start_up_error(rid, code, status, message):
    entries = [replace(s, code=code, status=status) if s.id == rid else s for s in ENTRIES]
    with pytest.raises(CatalogueError, match=message):
        check_catalogue(Catalogue(entries))


@pytest.mark.parametrize("module", ["avastd", "clamd", "fpscand", "spamd", "cli"])
def test_a_shipped_scanner_declares_the_replies_it_names(module):
    """Its own ids are declared in its ``replies``; the others are the core's named ones."""
    import importlib

    from barricade.plugin import Plugin

    mod = importlib.import_module(f"plugins.{module}")
    cls = next(v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, Plugin) and v.__module__ == mod.__name__)
    own = {spec.id for spec in cls.replies}
    assert own and not own & {s.id for s in ENTRIES}
    named = {v for k, v in [*vars(mod).items(), *vars(cls).items()]
             if k.isupper() and isinstance(v, int) and not isinstance(v, bool) and 100 <= v < 1000
             and (k.endswith(("_ERROR", "ERROR")) or k in ("INFECTED", "OVERFLOW", "UNEXPECTED_RESULT",
                                                          "JUNK_MAIL", "SENDER_STATUS", "SENDER_FLAG",
                                                          "PROGRAM_OUTPUT"))}
    named |= set(getattr(cls, "errors", {}).values())
    assert named
    assert all(rid in own or rid in set(ReplyId) for rid in named), sorted(named - own)
