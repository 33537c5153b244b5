"""barricade-check: a postmaster asks why mail from a client would be refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from barricade.testing import PACKAGE_ROOT, free_port

pytestmark = pytest.mark.integration

ACCESS = """\
connect:192.0.2 REJECT
connect:198.51.100.7 OK
from:spammer.example REJECT:"we do not want your mail"
to:postmaster@example.com OK
rate-connect: 30
"""


@pytest.fixture
def check(tmp_path, nsd):
    routes = tmp_path / "route-map"
    routes.write_text("route:local FORWARD: 127.0.0.1:2526\n"
                      "route:example.com FORWARD: 127.0.0.1:2526; RCPT: 127.0.0.1:2527\n")
    access = tmp_path / "access-map"
    access.write_text(ACCESS)
    conf = tmp_path / "barricade.cf"
    # A live Redis that is not there: the tool must not need it.  The names
    # here are RFC 2606 examples, which those checks would refuse first;
    # mail-require-mx and SPF (on by default) would ask DNS about them.
    conf.write_text(f"route-map={routes}\naccess-map={access}\n"
                    f"redis-url=redis://127.0.0.1:{free_port()}/0\n"
                    "-rfc2606-special-domains\n-reject-unknown-tld\n-mail-require-mx\n"
                    "spf-mail-policy=\n"
                    f"dns-servers={nsd.server}\ndns-max-timeout=5\n")

    def run(*args: str) -> tuple[int, str]:
        env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
        proc = subprocess.run([sys.executable, "-m", "barricade.explain", "--config", str(conf),
                               *args], capture_output=True, text=True, timeout=60, env=env)
        return proc.returncode, proc.stdout + proc.stderr

    return run


def test_a_black_listed_client_is_explained(check):
    status, out = check("--client", "192.0.2.1", "--ptr", "mail.outside.example",
                        "--helo", "mail.outside.example", "--mail", "a@example.org",
                        "--rcpt", "john@example.com")
    assert status == 1
    assert "client 192.0.2.1 [mail.outside.example]: may not relay" in out
    assert "access Connect: connect:192.0.2 -> REJECT" in out  # the map entry that fired
    assert "=> 550 5.7.1 host mail.outside.example [192.0.2.1] black listed #120" in out
    assert "helo:" not in out  # the session ends at connect


def test_held_refusal_and_white_listed_postmaster(check):
    status, out = check("--client", "203.0.113.5", "--helo", "x.example",
                        "--mail", "fred@spammer.example", "--rcpt", "postmaster@example.com",
                        "--rcpt", "john@example.com", "+smtp-delay-checks")
    assert status == 1
    assert ("=> held until RCPT (smtp-delay-checks): 550 5.7.1 sender <fred@spammer.example> "
            "we do not want your mail #127") in out
    post, john = out.split("rcpt postmaster@example.com:")[1].split("rcpt john@example.com:")
    assert "access To: to:postmaster@example.com -> OK" in post
    assert "forwarded to 127.0.0.1:2526 (route:example.com); call-ahead to 127.0.0.1:2527" in post
    assert "#127  (the held refusal)" in john


def test_accepted_mail_and_no_route(check):
    status, out = check("--client", "203.0.113.5", "--mail", "fred@good.example",
                        "--rcpt", "john@example.com")
    assert status == 0
    assert "rate-connect             pass" in out  # limits run against an empty store
    assert "=> accepted by the checks" in out
    status, out = check("--client", "203.0.113.5", "--mail", "fred@good.example",
                        "--rcpt", "x@elsewhere.example")
    assert status == 1
    assert "=> 550 5.7.1 recipient <x@elsewhere.example> relaying denied #288" in out


def test_white_listed_client_skips_the_rest(check):
    status, out = check("--client", "198.51.100.7", "--mail", "fred@spammer.example",
                        "--rcpt", "john@example.com")
    assert status == 0
    assert "access-connect           OK: white-listed, later checks skipped" in out
    assert "access-mail              skipped (white-listed)" in out


def test_configuration_errors_are_one_line(check):
    status, out = check("--client", "203.0.113.5", "no-such-option=1")
    assert status == 2
    assert out.strip() == "barricade-check: unknown option 'no-such-option'"


def test_envelope_checks_are_explained_too(check):
    status, out = check("--client", "203.0.113.5", "--helo", "mail.outside.example",
                        "--mail", "fred@good.example", "--rcpt", "john@example.com",
                        "+rfc2606-special-domains")
    assert status == 1
    assert "=> 550 5.7.0 HELO mail.outside.example from RFC2606 reserved domain #427" in out


def test_the_client_name_comes_from_dns(check):
    status, out = check("--client", "198.51.100.10", "--mail", "fred@good.example",
                        "--rcpt", "john@example.com")
    assert status == 0
    assert "client 198.51.100.10 [mail.clients.test]: may not relay" in out
    status, out = check("--client", "198.51.100.11", "--mail", "fred@good.example",
                        "--rcpt", "john@example.com")
    assert "PTR liar.clients.test does not resolve back to 198.51.100.11: forged" in out
    assert "client 198.51.100.11 [unknown]" in out


def test_a_dns_black_list_hit_is_explained(check):
    status, out = check("--client", "198.51.100.2", "--mail", "fred@good.example",
                        "--rcpt", "john@example.com", "dns-bl=bl.test")
    assert status == 1
    assert "=> 550 5.7.0 listed.clients.test [198.51.100.2] black listed by bl.test #525" in out


def test_readme_example_with_the_shipped_route_map(tmp_path, nsd):
    """The README's command on conf/route-map: 192.0.2.1 may relay, so the domain
    tests (#121 for mail.example.net) do not apply, as in smtpf; trailing -flags work."""
    conf = tmp_path / "barricade.cf"
    conf.write_text(f"route-map={PACKAGE_ROOT / 'conf/route-map'}\n"
                    f"dns-servers={nsd.server}\ndns-max-timeout=5\n")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "barricade.explain", "--config", str(conf), "--client", "192.0.2.1",
         "--ptr", "mail.example.net", "--helo", "mail.example.net", "--mail", "fred@example.net",
         "--rcpt", "john@example.com", "-mail-require-mx", "grey-key="],
        capture_output=True, text=True, timeout=60, env=env)
    out = proc.stdout + proc.stderr
    assert "client 192.0.2.1 [mail.example.net]: may relay" in out
    assert "#121" not in out and "#427" not in out
    assert proc.returncode == 0, out


def test_trailing_flags_and_recipient_replies_name_the_recipient(check):
    status, out = check("--client", "203.0.113.5", "--mail", "fred@outside.org",
                        "--rcpt", "john@example.com", "+rfc2606-special-domains", "-mail-require-mx")
    assert status == 1
    assert "=> 550 5.7.1 recipient <john@example.com> from RFC2606 reserved domain #140" in out
    assert "<?>" not in out


def test_an_authenticated_client_is_explained(check):
    """--auth: a black-listed roaming user who authenticates first (auth-delay-checks) may
    relay anywhere, through the route of the user name's domain; no password is asked."""
    status, out = check("--client", "192.0.2.1", "--ptr", "mail.outside.example",
                        "--helo", "laptop.example.org", "--auth", "fred@example.com",
                        "--mail", "fred@example.com", "--rcpt", "john@far.example",
                        "+smtp-auth-enable", "+auth-delay-checks")
    assert status == 0, out
    assert "connect, helo: not run (auth-delay-checks" in out
    assert "auth fred@example.com:\n  => authenticated (assumed) by 127.0.0.1:2527 (route:example.com)" in out
    assert "forwarded to 127.0.0.1:2527" in out
    status, out = check("--client", "192.0.2.1", "--ptr", "mail.outside.example",
                        "--helo", "laptop.example.org", "--auth", "fred@example.com",
                        "--mail", "fred@example.com", "--rcpt", "john@far.example", "+smtp-auth-enable")
    assert status == 1 and "black listed #120" in out  # without auth-delay-checks: refused at connect
