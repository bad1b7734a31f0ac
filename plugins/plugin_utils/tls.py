"""sage as the cluster's certificate authority, on the controller (security.tls: on).

The CA key is made once in the controller's TLS dir (~/.sage/tls/ca.key, 0600, the dir 0700) and never leaves
it. A node's key and certificate are made here too, in memory, and reach the node only as no_log arguments of
its start over the SSH channel sage already holds (written there 0600): a key made on the node would need the
node's Python to have `cryptography` (Ray does not bring it) and a second round trip for its signing request.
Nothing of a node's key is kept here. Leaves live 90 days; every node's cert serves and dials (Ray's TLS is
mutual), its SANs cover each address a peer dials: the node's IPs and names, 127.0.0.1 and localhost.

The crypto is `cryptography`'s (ansible-core's own dependency): no hand-made ASN.1, no `openssl` command.
Imported only by runs with TLS on.
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
from pathlib import Path

try:  # ansible-core's own dependency; ansible-test's import sanity runs without it
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    x509 = None  # type: ignore[assignment]

CA_KEY, CA_CERT = "ca.key", "ca.crt"
CLIENT_KEY, CLIENT_CERT = "client.key", "client.crt"
LEAF_DAYS = 90
CA_DAYS = 3650
# doctor warns, and a start issues a new leaf, this close to the end.
RENEW_DAYS = 30
# Always in a leaf: what a process on the node itself dials.
LOCAL_NAMES = ("127.0.0.1", "localhost")


class CAError(Exception):
    """The CA cannot be had (missing where it may not be made, unreadable): one line with the fix."""


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    """path written whole (a temp file renamed over it), with mode from its creation on."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    def __init__(self, key, cert: x509.Certificate, directory: Path):
        self.key, self.cert, self.dir = key, cert, directory

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, names, common_name: str, days: int = LEAF_DAYS, not_before=None) -> tuple[str, str]:
        """A new leaf for names (IPs and DNS names; 127.0.0.1 and localhost added): (key PEM, cert PEM).
        not_before: a test's way to an expired leaf."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(minutes=5)  # a node's clock a little behind
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(start + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in sans(names)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                             data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                # Every Ray process both serves and dials.
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return _key_pem(key).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()

    def client(self) -> tuple[Path, Path]:
        """This machine's client key and cert (for a driver or Ray Client here), made once: (key path, cert path).
        A driver serves too (Ray's workers call back into it), so the cert covers this machine's names and IPs."""
        key_path, cert_path = self.dir / CLIENT_KEY, self.dir / CLIENT_CERT
        if not (key_path.exists() and cert_path.exists()
                and check(cert_path.read_text(), self.cert_pem, local_names()) is None):
            key_pem, cert_pem = self.issue(local_names(), f"sage client {socket.gethostname()}")
            _write(key_path, key_pem.encode(), 0o600)
            _write(cert_path, cert_pem.encode(), 0o644)
        return key_path, cert_path


def ensure_ca(directory: Path, make: bool = True) -> CA:
    """The CA in directory, made there first (key 0600, dir 0700) when there is none and make allows it. A file in
    place of the directory is one PEM file holding the CA's cert and key (what AWX's sage TLS CA credential
    writes into a job): read, never made."""
    if x509 is None:
        raise CAError("security.tls: on needs the Python package `cryptography` where Ansible runs. Fix: pip install "
                      "cryptography (ansible-core brings it; an environment without it was built by hand)")
    if directory.is_file():
        return _load_ca(directory, directory)
    key_path = directory / CA_KEY
    if not key_path.exists():
        if not make:
            raise CAError(f"the cluster's CA ({key_path}) is not on this machine, and this run may not make one "
                          "(ray_node_tls_make: false). Fix: give the run the cluster's CA (AWX: the sage TLS CA "
                          "credential).")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Each host's forked worker of a run gets here at once: one makes the CA, the others wait and read it.
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not key_path.exists():
                _make_ca(directory)
    return _load_ca(directory / CA_KEY, directory / CA_CERT)


def _make_ca(directory: Path) -> None:
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sage-cluster CA {socket.gethostname()}"[:64])])
    start = _now() - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    # The cert first: a key without its cert would be a CA nobody can trust.
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(key_path, _key_pem(key), 0o600)


def _load_ca(key_path: Path, cert_path: Path) -> CA:
    try:
        # Each loader takes the first PEM block of its kind: one file may hold both.
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CAError(f"cannot read the cluster's CA in {cert_path.parent if key_path != cert_path else key_path} "
                      f"({getattr(exc, 'strerror', None) or exc}). Fix: make it readable, or move the directory away "
                      "for a new CA (every node then restarts on new certificates).") from None
    return CA(key, cert, cert_path.parent)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def sans(names) -> list[str]:
    """names with 127.0.0.1 and localhost, each once, in order ("" and None left out)."""
    return list(dict.fromkeys([n for n in names if n] + list(LOCAL_NAMES)))


def local_names() -> list[str]:
    """This machine's host name and the IPs it resolves to and sends from."""
    host = socket.gethostname()
    names = [host, socket.getfqdn()]
    try:
        names += [info[4][0] for info in socket.getaddrinfo(host, None)]
    except OSError:
        pass
    return sans(names)


def facts(cert_pem: str) -> dict:
    """What doctor and a start read of a cert: serial (hex), not_after (ISO), sans, issuer, days_left."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [str(n) for n in names.get_values_for_type(x509.IPAddress)] + names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        found = []
    left = cert.not_valid_after_utc - _now()
    return {"serial": format(cert.serial_number, "x"), "not_after": cert.not_valid_after_utc.isoformat(),
            "sans": found, "issuer": cert.issuer.rfc4514_string(), "days_left": left.days}


def check(cert_pem: str, ca_pem: str, names, renew_days: int = 0) -> str | None:
    """Why the leaf cert_pem will not do for names under the CA ca_pem (None: it will): not a cert, issued by
    another CA, expired (or within renew_days of it), or not covering one of names."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "its certificate is not a PEM certificate"
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"its certificate was issued by another CA ({cert.issuer.rfc4514_string()})"
    now = _now()
    if cert.not_valid_after_utc <= now:
        return f"its certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_after_utc - now < datetime.timedelta(days=renew_days):
        return f"its certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}, within {renew_days} days"
    have = {n.lower() for n in facts(cert_pem)["sans"]}
    missing = [n for n in sans(names) if _canonical(n) not in have]
    if missing:
        return f"its certificate does not cover {', '.join(missing)} (it covers {', '.join(sorted(have))})"
    return None


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")
