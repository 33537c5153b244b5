"""STARTTLS for clients: the server's OpenSSL context, and what a client's certificate was.

Built once per process from ``tls-server-cert`` (the certificate, then any
intermediate CA certificates to send with it), ``tls-server-key`` (with
``tls-server-key-pass`` if it is encrypted) and ``tls-server-dh`` (DH
parameters for the DHE ciphers of TLS 1.2).  When ``tls-cert-chain-file``
(a PEM file of CA certificates) or ``tls-cert-dir`` (a directory hashed
by ``openssl rehash`` / ``c_rehash``) is set, every client is asked for a
certificate, and OpenSSL verifies it against those CAs; the verification
never fails the handshake, its result is only recorded, so that a client
without a certificate, or with one we do not trust, can still use TLS where
the access map does not demand ``VERIFY``.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from barricade.protocol.client_cert import ClientCert, printable, verify_error

try:  # the text OpenSSL gives an unusual verification code (the common ones are in client_cert)
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover
    _ffi = _lib = None

log = Logger()


class TlsSetupError(Exception):
    """A TLS option that cannot work; the message is one line for the operator."""


def _error_text(code: int) -> str:
    if _lib is None:
        return ""
    try:
        return _ffi.string(_lib.X509_verify_cert_error_string(code)).decode("ascii", "replace")
    except Exception:
        return ""


class _Verification:
    """One connection's certificate verification, as OpenSSL's callback reports it.

    The callback always returns True: the handshake goes on whatever the
    outcome, which is judged later, per access-map entry.
    """

    def __init__(self) -> None:
        self.leaf_seen = False  # depth 0 was checked (not a resumed session's leftover)
        self.errors: list[tuple[int, int]] = []  # (depth, OpenSSL X509_V_ERR code)

    def callback(self, _conn: SSL.Connection, _cert: object, code: int, depth: int, ok: int) -> bool:
        if depth == 0:
            self.leaf_seen = True
        if not ok:
            self.errors.append((depth, code))
        return True


def _names(cert: x509.Certificate) -> tuple[str, str, tuple[str, ...]]:
    """(subject CN, issuer, DNS subjectAltNames) of ``cert``, empty where it has none."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, ValueError):
        dns = ()
    cn = cn if isinstance(cn, str) else cn.decode("latin-1")
    return printable(cn), printable(cert.issuer.rfc4514_string()), tuple(printable(d) for d in dns)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """The STARTTLS connection creator: one OpenSSL context, a verification record per connection."""

    def __init__(self, context: SSL.Context, asks: bool):
        self.context = context
        self.asks = asks  # a CA is configured: clients are asked for a certificate
        self._verifications: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        if self.asks:
            verification = _Verification()
            conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, verification.callback)
            self._verifications[conn] = verification
        return conn

    def client_cert(self, conn: SSL.Connection) -> ClientCert | None:
        """The client's certificate on ``conn`` after the handshake; None when it sent none."""
        try:
            if conn.get_peer_certificate() is None:
                return None
        except (AttributeError, SSL.Error):
            return None
        try:
            cert = conn.get_peer_certificate(as_cryptography=True)
            cn, issuer, dns = _names(cert)
            subject = printable(cert.subject.rfc4514_string())
        except ValueError as exc:  # OpenSSL took it, cryptography cannot read it
            return ClientCert(subject="?", issuer="?", error=f"unreadable certificate ({exc})",
                              reason="invalid")
        verification = self._verifications.get(conn)
        error, reason = "", ""
        if verification is None or not verification.leaf_seen:
            error, reason = "certificate not checked", "unchecked"
        elif verification.errors:
            depth, code = verification.errors[0]
            error, reason = verify_error(code, _error_text(code))
            if depth:
                error += f" (depth {depth})"
        return ClientCert(subject=subject, issuer=issuer, cn=cn, dns_names=dns, verified=not error,
                          error=error, reason=reason)


def tls_handshake_done(server, conn: SSL.Connection, sid: str) -> ClientCert | None:
    """Log the client's TLS (protocol, cipher, certificate) and count the certificate's outcome.

    ``server`` is the :class:`~barricade.net.conductor.ServerContext`; a
    creator that asks no certificate (no CA configured) counts nothing.
    """
    try:
        return _handshake_done(server, conn, sid)
    except Exception:  # never a traceback into the TLS layer: the session goes on without a certificate
        log.failure("session {sid}: reading the client's certificate", sid=sid)
        return None


def _handshake_done(server, conn: SSL.Connection, sid: str) -> ClientCert | None:
    creator = server.tls_context
    try:
        tls = f"{conn.get_protocol_version_name()} {conn.get_cipher_name()}"
    except (AttributeError, SSL.Error):
        tls = "?"
    if not isinstance(creator, ServerTls) or not creator.asks:
        log.info("session {sid}: TLS from client: {tls}", sid=sid, tls=tls)
        return None
    cert = creator.client_cert(conn)
    if cert is None:
        outcome, reason, said = "none", "", "no client certificate"
    elif cert.verified:
        outcome, reason, said = "pass", "", f"client certificate {cert.subject} (issuer {cert.issuer}) verified"
    else:
        outcome, reason = "fail", cert.reason
        said = f"client certificate {cert.subject} (issuer {cert.issuer}) not verified: {cert.error}"
    server.metrics.client_certificates.labels(outcome, reason).inc()
    log.info("session {sid}: TLS from client: {tls}; {said}", sid=sid, tls=tls, said=said)
    return cert


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"{option}: cannot read {path}: {exc.strerror}") from None


def _private_key(path: str, password: str):
    data = _read(path, "tls-server-key")
    try:
        return serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password:
            return serialization.load_pem_private_key(data, None)
        raise TlsSetupError(f"tls-server-key: {path} is encrypted; set tls-server-key-pass") from None
    except ValueError as exc:
        why = "wrong tls-server-key-pass or not a PEM private key" if password else "not a PEM private key"
        raise TlsSetupError(f"tls-server-key: {path}: {why} ({exc})") from None


def server_tls(config) -> ServerTls | None:
    """The STARTTLS creator the options describe; None when no certificate is set."""
    cert_path, key_path = config["tls-server-cert"], config["tls-server-key"]
    if not cert_path and not key_path:
        return None
    if not (cert_path and key_path):
        raise TlsSetupError("tls-server-cert and tls-server-key must be set together")
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path, "tls-server-cert"))
    except ValueError as exc:
        raise TlsSetupError(f"tls-server-cert: {cert_path}: no PEM certificate ({exc})") from None
    key = _private_key(key_path, config["tls-server-key-pass"])
    dh_path = config["tls-server-dh"]
    dh = None
    if dh_path:
        if b"-----BEGIN DH PARAMETERS-----" not in _read(dh_path, "tls-server-dh"):
            raise TlsSetupError(f"tls-server-dh: {dh_path}: not PEM DH parameters (openssl dhparam)")
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(dh_path))
    try:
        context = ssl.CertificateOptions(dhParameters=dh).getContext()
    except SSL.Error as exc:
        raise TlsSetupError(f"tls-server-dh: {dh_path}: bad DH parameters ({exc})") from None
    try:
        context.use_certificate(chain[0])
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(key)
        context.check_privatekey()
    except (SSL.Error, TypeError, ValueError) as exc:
        raise TlsSetupError(f"tls-server-cert/tls-server-key ({cert_path}, {key_path}): {exc}") from None
    ca_file, ca_dir = config["tls-cert-chain-file"], config["tls-cert-dir"]
    if ca_file:
        _read(ca_file, "tls-cert-chain-file")
    if ca_dir and not Path(ca_dir).is_dir():
        raise TlsSetupError(f"tls-cert-dir: {ca_dir} is not a directory")
    if ca_file or ca_dir:
        try:
            context.load_verify_locations(ca_file or None, ca_dir or None)
            if ca_file:  # the CAs named in the certificate request, so a client can pick
                context.load_client_ca(ca_file.encode())
        except SSL.Error as exc:
            raise TlsSetupError(f"tls-cert-chain-file/tls-cert-dir: {exc}") from None
    return ServerTls(context, asks=bool(ca_file or ca_dir))
