"""A real Postfix on loopback as the downstream MTA (docs/postfix.md): a private
instance in a temp dir.

Its own config, queue and data directories (none of the system's Postfix files
are touched: ``-c`` points every Postfix command at ours); smtpd on a free
127.0.0.1 port; example.com is a virtual mailbox domain delivered to
``<dir>/mail/box/`` (a maildir); recipients named in ``rejected`` are refused
at RCPT through a texthash access map; XCLIENT and XFORWARD are allowed from
127.0.0.0/8; every lookup stays on loopback (no peer-name lookups, no DNS for
delivery).  Needs root (Postfix drops to its own users) and the Debian postfix
package.  Stopped by ``postfix stop`` on its own config, never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from barricade.testing import banner_ready, free_port, wait_for

MASTER_CF_CANDIDATES = (Path("/usr/share/postfix/master.cf.dist"), Path("/etc/postfix/master.cf"))


def _path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin"


def available() -> bool:
    return (os.geteuid() == 0 and shutil.which("postfix", path=_path()) is not None
            and any(p.exists() for p in MASTER_CF_CANDIDATES))


class Postfix:
    """``postfix -c <dir>/etc start``; ``stop()`` stops this instance only.

    ``settings``: more ``main.cf`` lines (``name=value``) for a test's own restrictions.
    """

    def __init__(self, *settings: str, size_limit: int = 10240000, rejected: dict[str, str] | None = None):
        if not available():
            raise RuntimeError("needs root and Postfix (apt-get install postfix)")
        self.port = free_port()
        # Postfix's own users must reach the directories: not pytest's 0700 tmp dirs.
        self.dir = Path(tempfile.mkdtemp(prefix=f"barricade-postfix-{self.port}-"))
        self.dir.chmod(0o755)
        self.etc, self.mail = self.dir / "etc", self.dir / "mail"
        for sub in ("etc", "queue", "data", "mail"):
            (self.dir / sub).mkdir()
        master = next(p for p in MASTER_CF_CANDIDATES if p.exists()).read_text()
        lines = [f"127.0.0.1:{self.port} inet n - n - - smtpd"
                 if line.startswith("smtp ") and "inet" in line else line for line in master.splitlines()]
        (self.etc / "master.cf").write_text("\n".join(lines) + "\n")
        (self.etc / "main.cf").write_text("")
        access = self.dir / "rcpt_access"
        access.write_text("".join(f"{rcpt} {reply}\n" for rcpt, reply in (rejected or {}).items()))
        self.log = self.dir / "maillog"
        self.postconf(
            f"queue_directory={self.dir}/queue", f"data_directory={self.dir}/data",
            "mail_owner=postfix", "setgid_group=postdrop", "compatibility_level=3.6",
            f"maillog_file={self.log}", f"maillog_file_prefixes={self.dir}",
            "inet_interfaces=127.0.0.1", "inet_protocols=ipv4",
            "myhostname=mx.example.com", "mydestination=", "local_recipient_maps=", "alias_maps=",
            "alias_database=", "virtual_mailbox_domains=example.com", f"virtual_mailbox_base={self.mail}",
            "virtual_mailbox_maps=static:box/", "virtual_uid_maps=static:65534",
            "virtual_gid_maps=static:65534", "virtual_minimum_uid=100", "virtual_mailbox_limit=0",
            "smtpd_peername_lookup=no", "smtp_dns_support_level=disabled", "smtp_host_lookup=native",
            "smtpd_authorized_xforward_hosts=127.0.0.0/8", "smtpd_authorized_xclient_hosts=127.0.0.0/8",
            "fast_flush_domains=example.com",
            # docs/postfix.md, main.cf
            "mynetworks=127.0.0.0/8", f"message_size_limit={size_limit}", "smtpd_timeout=300s",
            "smtpd_recipient_restrictions=check_recipient_access texthash:"
            f"{access}, permit_mynetworks, reject_unauth_destination",
            *settings,
        )
        self._run("postconf", "-F", "*/*/chroot = n")
        shutil.chown(self.dir / "data", "postfix")
        shutil.chown(self.mail, 65534)
        self._run("postfix", "start")
        try:
            wait_for(lambda: banner_ready(self.port), timeout=20, what="postfix")
        except TimeoutError:
            self.stop()
            raise

    def postconf(self, *settings: str) -> None:
        self._run("postconf", "-e", *settings)

    def _run(self, command: str, *args: str) -> None:
        subprocess.run([command, "-c", str(self.etc), *args], check=True, capture_output=True,
                       timeout=60, env=dict(os.environ, PATH=_path()))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def messages(self) -> list[bytes]:
        """Delivered messages (maildir files), oldest first."""
        new = self.mail / "box" / "new"
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns) if new.exists() else []
        return [p.read_bytes() for p in files]

    def delivered(self, count: int = 1, timeout: float = 20) -> list[bytes]:
        """The maildir's messages, once ``count`` have arrived."""
        wait_for(lambda: len(self.messages()) >= count, timeout=timeout,
                 what=f"{count} message(s) in the maildir")
        return self.messages()

    def stop(self) -> None:
        try:
            self._run("postfix", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
