"""A throw-away PKI for the TLS tests: CAs, server and client certificates, in one directory.

Built with the ``cryptography`` package (dates in the past are needed for an
expired certificate) and ``openssl`` for what only it makes: the hashed CA
directory (``openssl rehash``) and DH parameters.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_PASS = "s3cret pass"
NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Barricade tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key, issuer: tuple | None, *, ca: bool = False, dns: tuple[str, ...] = (),
          ips: tuple[str, ...] = (), usage=None, days: tuple[int, int] = (-1, 30)):
    import ipaddress

    issuer_name, issuer_key = issuer if issuer else (_name(cn), key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW + dt.timedelta(days=days[0]))
         .not_valid_after(NOW + dt.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                            critical=True)
    if dns or ips:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
            critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_cert(*certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pem_key(key, password: str = "") -> bytes:
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class Pki:
    """Paths of everything :func:`make_pki` wrote."""

    dir: Path
    root: Path  # the trusted root CA (PEM), for tls-cert-chain-file
    ca_dir: Path  # the root, hashed (openssl rehash), for tls-cert-dir
    server_chain: Path  # server certificate then the intermediate CA
    server_key: Path
    server_key_encrypted: Path  # the same key, encrypted with KEY_PASS
    dh: Path  # ffdhe2048 DH parameters
    clients: dict[str, tuple[Path, Path]]  # name -> (cert, key)


def make_pki(d: Path) -> Pki:
    """Root CA → intermediate CA → server (127.0.0.1, mx.barricade.test); client certificates.

    Clients: ``good`` (CN client.example.org, SAN DNS client.example.org and
    *.relay.example.org), ``san-only`` (CN other, SAN gw.example.net),
    ``other-ca`` (issued by an untrusted CA), ``expired``, ``server-only``
    (extended key usage serverAuth only), ``self-signed``.
    """
    d.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Barricade Test Root CA", root_key, None, ca=True, days=(-2, 365))
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Barricade Test Intermediate CA", inter_key, (root.subject, root_key), ca=True,
                  days=(-2, 365))
    server_key = rsa.generate_private_key(65537, 2048)  # RSA: the DHE-RSA ciphers need it
    server = _cert("mx.barricade.test", server_key, (inter.subject, inter_key),
                   dns=("mx.barricade.test",), ips=("127.0.0.1",))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("Some Other CA", other_key, None, ca=True, days=(-2, 365))

    def write(name: str, data: bytes) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    clients: dict[str, tuple[Path, Path]] = {}

    def client(name: str, cn: str, issuer, **kw) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, issuer, **kw)
        clients[name] = (write(f"client-{name}.pem", _pem_cert(cert)),
                         write(f"client-{name}.key", _pem_key(key)))

    trusted = (root.subject, root_key)
    client("good", "client.example.org", trusted, dns=("client.example.org", "*.relay.example.org"),
           usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    client("san-only", "other name", trusted, dns=("gw.example.net",))
    client("other-ca", "client.example.org", (other.subject, other_key), dns=("client.example.org",))
    client("expired", "client.example.org", trusted, dns=("client.example.org",), days=(-30, -1))
    client("server-only", "client.example.org", trusted, dns=("client.example.org",),
           usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client("self-signed", "client.example.org", None, dns=("client.example.org",))

    root_path = write("root.pem", _pem_cert(root))
    ca_dir = d / "cadir"
    ca_dir.mkdir(exist_ok=True)
    shutil.copy(root_path, ca_dir / "root.pem")
    subprocess.run(["openssl", "rehash", str(ca_dir)], check=True, capture_output=True, timeout=60)
    dh = d / "dh.pem"
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                    "-out", str(dh)], check=True, capture_output=True, timeout=60)
    return Pki(dir=d, root=root_path, ca_dir=ca_dir,
               server_chain=write("server-chain.pem", _pem_cert(server, inter)),
               server_key=write("server.key", _pem_key(server_key)),
               server_key_encrypted=write("server-encrypted.key", _pem_key(server_key, KEY_PASS)),
               dh=dh, clients=clients)
