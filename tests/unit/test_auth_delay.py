"""auth-delay-checks: the connect and HELO checks wait for MAIL, run once, and their
refusal answers every MAIL until the client authenticates (barricade.net.authenticate)."""

from __future__ import annotations

from types import SimpleNamespace

from barricade.net.authenticate import Authenticator
from barricade.policy.verdict import CONTINUE, Action, Verdict
from tests.coroutines import finished as run  # the fakes never wait


class FakeProxy:
    def __init__(self, verdicts: dict[str, Verdict], delay: bool = True):
        self.cfg = {"smtp-auth-enable": True, "auth-delay-checks": delay, "smtp-auth-max-failures": 5,
                    "smtp-auth-failure-window": 900, "smtp-auth-white": False}
        self.verdicts = verdicts
        self.ran: list[str] = []
        self.ctx = SimpleNamespace(session_id="S", client=None, auth="")
        self.rules = SimpleNamespace(refusal=lambda ctx, phase, v: f"refused at {phase}" if v.decisive else None)

    async def run(self, phase: str) -> Verdict:
        self.ran.append(phase)
        return self.verdicts.get(phase, CONTINUE)

    async def run_always(self, phase: str) -> Verdict:
        self.ran.append(f"always:{phase}")
        return CONTINUE


def test_checks_wait_for_mail_and_run_once():
    proxy = FakeProxy({})
    auth = Authenticator(proxy)
    assert run(auth.run("connect")) is CONTINUE and run(auth.run("helo")) is CONTINUE
    # The checks no white list lifts (Tls-Connect:) run at once all the same.
    assert proxy.ran == ["always:connect", "always:helo"]
    proxy.ran.clear()
    assert run(auth.run("mail")) is CONTINUE and proxy.ran == ["mail"]
    assert run(auth.postponed()) is None
    assert proxy.ran == ["mail", "connect", "helo"]
    assert run(auth.postponed()) is None and proxy.ran == ["mail", "connect", "helo"]


def test_a_refusal_answers_every_mail_until_the_client_authenticates():
    proxy = FakeProxy({"helo": Verdict(Action.REJECT, 424)})
    auth = Authenticator(proxy)
    run(auth.run("connect"))
    run(auth.run("helo"))
    assert run(auth.postponed()) == "refused at helo"
    assert run(auth.postponed()) == "refused at helo"
    assert proxy.ran == ["always:connect", "always:helo", "connect", "helo"]
    auth.user = "fred"  # what grant() records
    assert run(auth.postponed()) is None


def test_an_authenticated_client_never_runs_them():
    proxy = FakeProxy({"connect": Verdict(Action.REJECT, 120)})
    auth = Authenticator(proxy)
    run(auth.run("connect"))
    auth.user = "fred"
    assert run(auth.postponed()) is None and proxy.ran == ["always:connect"]


def test_without_the_option_nothing_waits():
    proxy = FakeProxy({}, delay=False)
    auth = Authenticator(proxy)
    run(auth.run("connect"))
    assert proxy.ran == ["connect"] and run(auth.postponed()) is None
