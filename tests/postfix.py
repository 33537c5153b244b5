"""A private Postfix instance on loopback, as the downstream MTA of docs/postfix.md.

Its own config, queue and data directories under one temp directory (none of the
system's Postfix files are touched: ``MAIL_CONFIG`` points every Postfix command at
ours, which root may do without ``alternate_config_directories``); smtpd on
127.0.0.1:<port>, virtual mailboxes for example.com as maildirs, unknown
recipients refused at RCPT through a texthash access map.  Stopped by
``postfix stop`` on its own config, never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from barricade.testing import banner_ready, free_port, wait_for


class Postfix:
    def __init__(self, size_limit: int, rejected: dict[str, str]):
        if shutil.which("postfix", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
            raise RuntimeError("postfix not installed")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="barricade-postfix-"))
        self.root.chmod(0o755)
        self.etc, self.mail = self.root / "etc", self.root / "mail"
        for d in (self.etc, self.root / "queue", self.root / "data", self.mail):
            d.mkdir()
        master = Path("/etc/postfix/master.cf")
        if not master.exists():
            master = Path("/usr/share/postfix/master.cf.dist")
        text = master.read_text()
        smtp = next(ln for ln in text.splitlines() if ln.startswith("smtp ") and "inet" in ln)
        (self.etc / "master.cf").write_text(text.replace(
            smtp, f"127.0.0.1:{self.port} inet n - n - - smtpd"))
        (self.etc / "main.cf").write_text("")
        access = self.root / "rcpt_access"
        access.write_text("".join(f"{rcpt} {reply}\n" for rcpt, reply in rejected.items()))
        settings = {
            "queue_directory": self.root / "queue", "data_directory": self.root / "data",
            "mail_owner": "postfix", "setgid_group": "postdrop", "compatibility_level": "3.6",
            "maillog_file": self.root / "postfix.log", "maillog_file_prefixes": self.root,
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": "mx.example.com", "mydestination": "", "local_recipient_maps": "",
            "alias_maps": "", "alias_database": "", "virtual_mailbox_domains": "example.com",
            "virtual_mailbox_base": self.mail, "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": "static:65534", "virtual_gid_maps": "static:65534",
            "virtual_minimum_uid": "100", "virtual_mailbox_limit": "0",
            "smtpd_peername_lookup": "no", "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            # docs/postfix.md, main.cf
            "mynetworks": "127.0.0.0/8", "message_size_limit": str(size_limit),
            "smtpd_timeout": "300s",
            "smtpd_recipient_restrictions":
                f"check_recipient_access texthash:{access}, permit_mynetworks, reject_unauth_destination",
        }
        self.env = dict(os.environ, MAIL_CONFIG=str(self.etc), PATH=os.environ["PATH"] + ":/usr/sbin")
        self.postconf("-e", *(f"{k}={v}" for k, v in settings.items()))
        shutil.chown(self.root / "data", "postfix")
        shutil.chown(self.mail, 65534)
        self.command("postfix", "start")
        wait_for(lambda: banner_ready(self.port), 20, "postfix smtpd")

    def postconf(self, *args: str) -> None:
        self.command("postconf", *args)

    def command(self, name: str, *args: str) -> None:
        subprocess.run([name, "-c", str(self.etc), *args], env=self.env, check=True,
                       capture_output=True, timeout=60)

    def messages(self) -> list[bytes]:
        """Delivered messages (maildir files), oldest first."""
        files = sorted(self.mail.glob("box/new/*"), key=lambda p: p.stat().st_mtime)
        return [p.read_bytes() for p in files]

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        try:
            self.command("postfix", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
