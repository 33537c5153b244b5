"""Start-up as an operator sees it: config errors are one clear line, help is the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from barricade import plugin
from barricade.options import REGISTRY
from barricade.options import render_markdown as render_options
from barricade.replies import ENTRIES, Catalogue, render_markdown
from tests.daemons import REPO, banner_ready, free_port, stop, wait_for
from tests.smtpclient import Client

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]


def twistd(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*TWISTD, "barricade", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(cwd), env=env)


def last_line(run: subprocess.CompletedProcess) -> str:
    return (run.stdout + run.stderr).strip().splitlines()[-1]


def test_unknown_option_names_it(tmp_path):
    run = twistd("--config", str(REPO / "conf/example.cf"), "smtp-comand-timeout=5")
    assert run.returncode != 0
    assert last_line(run).endswith("unknown option 'smtp-comand-timeout'")


def test_bad_value_names_option_and_value():
    run = twistd("smtp-command-timeout=soon")
    assert run.returncode != 0
    assert "option smtp-command-timeout: 'soon' is not a number" in last_line(run)


def test_config_error_is_one_line_without_twistd_usage(tmp_path):
    run = twistd("smtp-command-timeout=soon")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "twistd barricade: option smtp-command-timeout: 'soon' is not a number"]


@pytest.mark.parametrize("setting, error", [
    ("interfaces=", "interfaces: no address to listen on"),
    ('interface-name="mx1.example.com our name"', "interface-name: 'mx1.example.com our name' is not a host name"),
])
def test_nowhere_to_listen_or_a_name_that_is_no_host_name_stops_startup(setting, error):
    run = twistd("--config", str(REPO / "conf/example.cf"), setting)
    assert run.returncode == 1
    assert error in last_line(run)


def test_a_redis_url_password_is_never_shown_in_an_error():
    run = twistd("--config", str(REPO / "conf/example.cf"), "redis-url=redis://:hunter2pw@127.0.0.1:9/notadb")
    assert run.returncode == 1
    assert "bad database in 'redis://:***@127.0.0.1:9/notadb'" in last_line(run)
    assert "hunter2pw" not in run.stdout + run.stderr


def test_a_reactor_other_than_asyncio_is_refused_at_startup(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
            "--reactor=epoll", "barricade", "--config", str(REPO / "conf/example.cf")]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=str(REPO), env=env)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "twistd barricade: Barricade needs the asyncio reactor, not EPollReactor: leave out "
        "twistd's --reactor option (or give --reactor=asyncio)"]


def test_twistd_reactor_option_asyncio_is_accepted(tmp_path):
    routes = tmp_path / "routes"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "--reactor=asyncio", "barricade", f"interfaces=127.0.0.1:{port}", f"route-map={routes}",
         "metrics-interface=", "workers=1", "dns-servers=127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=env)
    try:
        wait_for(lambda: banner_ready(port) or proc.poll() is not None, 20, "barricade")
        assert proc.poll() is None, proc.stdout.read().decode()
    finally:
        stop(proc)


def test_bad_line_in_config_file_names_file_and_line(tmp_path):
    cf = tmp_path / "bad.cf"
    cf.write_text("# comment\n\n+rfc2920-pipelining\nrfc2821-line-length=lots\n")
    run = twistd("--config", str(cf))
    assert run.returncode != 0
    assert f"{cf}:4: option rfc2821-line-length: 'lots' is not a number" in last_line(run)

    cf.write_bytes(b"plugins=clamd\n# caf\xe9\n")  # Latin-1: read by the plugin loader first
    run = twistd("--config", str(cf))
    assert run.returncode != 0 and "Traceback" not in run.stdout + run.stderr
    assert f"config file {cf} is not UTF-8" in last_line(run)


def test_route_map_problems_stop_startup(tmp_path):
    missing = tmp_path / "nope"
    run = twistd(f"route-map={missing}", "metrics-interface=")
    assert run.returncode != 0 and f"cannot read map {missing}" in last_line(run)
    no_local = tmp_path / "routes"
    no_local.write_text("route:example.com FORWARD: 127.0.0.1:25\n")
    run = twistd(f"route-map={no_local}")
    assert "route:local with a FORWARD: host is required" in last_line(run)
    bad = tmp_path / "bad-routes"
    bad.write_text("route:local FORWARD: 127.0.0.1:99999\n")
    run = twistd(f"route-map={bad}")
    assert "bad port in '127.0.0.1:99999'" in last_line(run)


def test_reply_file_with_unknown_field_stops_startup(tmp_path):
    routes = tmp_path / "routes"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    replies = tmp_path / "replies"
    replies.write_text("288 no relay for {recipient}\n")
    run = twistd(f"route-map={routes}", f"reply-file={replies}")
    assert run.returncode != 0
    assert f"{replies}:1: reply #288: unknown field(s) recipient" in last_line(run)


def test_port_in_use_is_one_clear_line(tmp_path):
    import socket

    routes = tmp_path / "routes"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = twistd(f"route-map={routes}", f"interfaces=127.0.0.1:{port}", "metrics-interface=",
                     cwd=tmp_path)
    assert run.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}: address in use" in run.stdout + run.stderr


def test_a_metrics_port_in_use_with_workers_is_one_line_and_no_worker(tmp_path):
    """The master bound /metrics after starting its workers: a traceback, and the
    workers went on answering SMTP without a master."""
    import socket

    from barricade.testing import free_port

    routes = tmp_path / "routes"
    routes.write_text("route:local FORWARD: 127.0.0.1:25\n")
    smtp = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = twistd(f"route-map={routes}", f"interfaces=127.0.0.1:{smtp}", "workers=2",
                     f"metrics-interface=127.0.0.1:{port}", "dns-servers=127.0.0.1:9", cwd=tmp_path)
    assert run.returncode != 0
    assert f"metrics-interface: cannot listen on 127.0.0.1:{port}: address in use" in last_line(run)
    assert "Traceback" not in run.stdout + run.stderr
    with socket.socket() as probe:  # no worker was left to answer
        assert probe.connect_ex(("127.0.0.1", smtp)) != 0


def test_help_writes_a_complete_config_that_reads_back(tmp_path):
    plugin.prepare([])  # the shipped plugins' options are in the output too
    run = twistd("help", "smtp-command-timeout=42")
    assert run.returncode == 0
    for opt in REGISTRY:
        assert f"\n{opt.format(opt.default)}" in run.stdout or opt.name == "smtp-command-timeout"
    assert "# default: smtp-command-timeout=300\nsmtp-command-timeout=42\n" in run.stdout
    cf = tmp_path / "written.cf"
    cf.write_text(run.stdout)
    assert REGISTRY.parse([], cf)["smtp-command-timeout"] == 42



def test_smtpf_flags_on_the_command_line_are_settings_not_twistd_switches():
    """``-relay-reply`` was read as twistd's ``-r``, ``-call-back`` as ``-c all-back``."""
    cf = REPO / "conf/example.cf"
    run = twistd("-call-back", "-help", "+relay-reply", "--config", str(cf), "-rfc2920-pipelining")
    assert run.returncode == 0, run.stderr
    for line in ("-call-back", "+relay-reply", "-rfc2920-pipelining"):
        assert f"\n{line}\n" in run.stdout
    assert "\ninterfaces=127.0.0.1:2525\n" in run.stdout  # the config file was read too
    assert twistd("--config").stderr.strip() == "twistd barricade: --config needs a file name"


def test_shipped_config_is_the_help_output():
    plugin.prepare([])  # the shipped plugins' options are part of the file
    shipped = (REPO / "conf/barricade.cf").read_text()
    assert shipped == REGISTRY.render(), "regenerate: twistd -n barricade help > conf/barricade.cf"


def test_option_reference_is_current():
    plugin.prepare([])
    assert (REPO / "docs/options.md").read_text() == render_options(REGISTRY), "regenerate: scripts/regen"


def test_option_reference_follows_the_readme_groups():
    readme = (REPO / "README.md").read_text()
    text = (REPO / "docs/options.md").read_text()
    titles = [ln[3:] for ln in text.splitlines() if ln.startswith("## ")]
    assert "Other" not in titles  # every section has its README heading
    for title in titles:  # each group is named after README headings, in the README's order
        first = title.split(" and ")[0].split(",")[0]
        assert first.lower() in readme.lower(), title
    documented = {ln.split("`")[1] for ln in text.splitlines() if ln.startswith("| `")}
    assert documented == {opt.name for opt in REGISTRY}


def test_reply_docs_are_current():
    catalogue = Catalogue((*ENTRIES, *plugin.plugin_replies()))
    assert (REPO / "docs/replies.md").read_text() == render_markdown(catalogue), \
        "regenerate: scripts/regen"


def test_example_config_starts(tmp_path):
    """The quick start: the shipped example config (run from the project root) serves SMTP."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*TWISTD, "--logfile", str(tmp_path / "log"), "barricade", "--config", "conf/example.cf",
         f"interfaces=127.0.0.1:{port}", "metrics-interface="],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: banner_ready(port) or proc.poll() is not None, 20, "barricade")
        assert proc.poll() is None, proc.stdout.read()
        with Client(port) as c:
            assert c.banner.text.startswith("barricade.example.com ESMTP")
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            assert c.cmd("RCPT TO:<x@elsewhere.example>").id == 288
    finally:
        stop(proc)
