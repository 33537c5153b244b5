"""SAVE, TRAP and TAG: the notes the access checks leave and what the message phases do."""

from __future__ import annotations

from barricade.policy.access import (
    COPIES,
    SESSION_TAG,
    TAG,
    AccessConnect,
    AccessCopy,
    AccessMap,
    AccessMessage,
    AccessRcpt,
)
from barricade.policy.pipeline import Context
from barricade.policy.tagging import tag_message
from barricade.policy.verdict import Action
from barricade.protocol.events import ClientInfo
from barricade.replies import Catalogue
from tests.coroutines import finished as done

OUTSIDE = ClientInfo("192.0.2.1", 25, name="mail.outside.example")


def amap(tmp_path, text: str) -> AccessMap:
    path = tmp_path / "access-map"
    path.write_text(text)
    return AccessMap(str(path))


def test_tag_on_connect_is_noted_for_the_session_with_the_reject_text(tmp_path):
    ctx = Context("S", OUTSIDE)
    verdict = done(AccessConnect(amap(tmp_path, "connect:192.0.2 TAG\n")).connect(ctx))
    assert verdict.action is Action.CONTINUE
    assert ctx.notes[SESSION_TAG] == "host mail.outside.example [192.0.2.1] black listed"
    ctx.reset_transaction()
    assert SESSION_TAG in ctx.notes


def test_tag_on_to_is_for_the_transaction_and_names_the_recipient(tmp_path):
    ctx = Context("S", OUTSIDE)
    ctx.sender = "a@example.org"
    done(AccessRcpt(amap(tmp_path, "to:b@example.com TAG\n")).rcpt(ctx, "b@example.com"))
    assert ctx.notes[TAG] == "recipient <b@example.com> black listed"
    ctx.reset_transaction()
    assert TAG not in ctx.notes


def test_access_message_tags_once_at_the_headers(tmp_path):
    ctx = Context("S", OUTSIDE)
    ctx.notes[TAG] = "sender <a@example.org> black listed"
    check = AccessMessage(amap(tmp_path, ""), "[JUNK]")
    done(check.headers(ctx))
    done(check.headers(ctx))
    assert ctx.subject_tag == "[JUNK]"
    assert ctx.added_headers == [("X-Spam-Flag", "YES"),
                                 ("X-Spam-Reason", "sender <a@example.org> black listed")]


def test_the_first_reason_to_tag_wins():
    ctx = Context("S", OUTSIDE)
    assert tag_message(ctx, "[SPAM]", "first")
    assert not tag_message(ctx, "[OTHER]", "second")
    assert ctx.subject_tag == "[SPAM]"
    assert ("X-Spam-Reason", "first") in ctx.added_headers
    assert len(ctx.added_headers) == 2


def copy_message(check: AccessCopy, ctx: Context):
    ctx.header_block = b"Subject: x\r\n"
    done(check.headers(ctx))
    done(check.body(ctx, b"\r\nbody\r\n"))
    return done(check.end_of_data(ctx))


def test_save_and_trap_file_the_message_under_its_queue_id(tmp_path):
    save, trap, other = tmp_path / "save", tmp_path / "trap", tmp_path / "other"
    for d in (save, trap, other):
        d.mkdir()
    check = AccessCopy(amap(tmp_path, ""), str(save), str(trap))
    ctx = Context("S", OUTSIDE, qid="S01")
    ctx.notes[COPIES] = [("SAVE", None), ("SAVE", None), ("TRAP", str(other))]
    verdict = copy_message(check, ctx)
    assert (verdict.action, verdict.reply_id) == (Action.REJECT, 932)
    assert [p.name for p in save.iterdir()] == ["S01.msg"]
    assert (save / "S01.msg").read_bytes() == b"Subject: x\r\n\r\nbody\r\n"
    assert [p.name for p in other.iterdir()] == ["S01.msg"]
    assert list(trap.iterdir()) == []


def test_save_delivers_and_an_unwritable_trap_still_refuses(tmp_path):
    check = AccessCopy(amap(tmp_path, ""), str(tmp_path), str(tmp_path / "missing"))
    ctx = Context("S", OUTSIDE, qid="S02")
    ctx.notes[COPIES] = [("SAVE", None)]
    assert copy_message(check, ctx).action is Action.CONTINUE
    assert (tmp_path / "S02.msg").exists()
    ctx = Context("S", OUTSIDE, qid="S03")
    ctx.notes[COPIES] = [("TRAP", None)]
    assert copy_message(check, ctx).reply_id == 932  # never delivered, even without a copy


def test_no_words_no_copy(tmp_path):
    check = AccessCopy(amap(tmp_path, ""), str(tmp_path), str(tmp_path))
    ctx = Context("S", OUTSIDE, qid="S04")
    assert copy_message(check, ctx).action is Action.CONTINUE
    assert not (tmp_path / "S04.msg").exists()


def test_reply_932_is_smtpfs_blocked_reply():
    r = Catalogue().reply(932)
    assert (r.code, r.status, r.id, r.text) == (550, "5.7.0", 932, "this message was blocked")
