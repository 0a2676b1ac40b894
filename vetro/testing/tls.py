"""Certificates a test makes for itself: a throwaway authority, a server certificate for 127.0.0.1, and a client
certificate (for servers that ask clients for one: mutual TLS).

For TLS tests on loopback (`rediss://`, `amqps://`): nothing is read from or written to the machine's
trust store; the files live in a temporary directory the caller removes.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the authority's certificate: what both sides trust
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path  # its private key
    client_cert: Path  # a client's certificate, signed by the same authority
    client_key: Path
    directory: Path


def make_certificates(directory: str | None = None) -> Certificates:
    """A new authority, and a server and a client certificate it signed, as PEM files in `directory`."""
    where = Path(directory or tempfile.mkdtemp(prefix="vetro-tls-"))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("vetro test authority")
    ca_cert = _certificate(
        ca_name,
        ca_name,
        ca_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),  # signing only
        ],
    )
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    local = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    server = _certificate(
        _name("127.0.0.1"),
        ca_name,
        server_key.public_key(),
        ca_key,
        [(local, False), (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    client = _certificate(
        _name("vetro test client"),
        ca_name,
        client_key.public_key(),
        ca_key,
        [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    found = Certificates(
        where / "ca.pem", where / "server.pem", where / "server.key", where / "client.pem", where / "client.key", where
    )
    for path, certificate in ((found.ca, ca_cert), (found.cert, server), (found.client_cert, client)):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pkcs8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for path, key in ((found.key, server_key), (found.client_key, client_key)):
        path.write_bytes(key.private_bytes(*pkcs8))
        path.chmod(0o600)
    return found


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())
