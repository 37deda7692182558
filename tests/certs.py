"""Test certificates: a CA and a server certificate for localhost, made by the tests."""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(name: str):
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert, hostname: str = "localhost", ip: str | None = "127.0.0.1", client: bool = False):
    import ipaddress

    key = _key()
    names = [x509.DNSName(hostname)] + ([x509.IPAddress(ipaddress.ip_address(ip))] if ip else [])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_tls_files(directory: str) -> dict:
    """Write ca.pem, server.pem/.key, client.pem/.key, a certificate for another host
    (otherhost.pem/.key) and a second, unrelated other-ca.pem."""
    ca_key, ca_cert = make_ca("lorrygate test CA")
    server_key, server_cert = make_server_cert(ca_key, ca_cert)
    client_key, client_cert = make_server_cert(ca_key, ca_cert, "lorrygate-gateway", ip=None)
    other_key, other_cert = make_server_cert(ca_key, ca_cert, "otherhost.example", ip=None)
    _, other_ca = make_ca("some other CA")
    paths = {name: os.path.join(directory, name) for name in (
        "ca.pem", "server.pem", "server.key", "other-ca.pem", "client.pem", "client.key", "otherhost.pem",
        "otherhost.key")}
    for name, cert, key in (("client", client_cert, client_key), ("otherhost", other_cert, other_key)):
        with open(paths[f"{name}.pem"], "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(paths[f"{name}.key"], "wb") as handle:
            handle.write(_pem_key(key))
    with open(paths["ca.pem"], "wb") as handle:
        handle.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as handle:
        handle.write(server_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as handle:
        handle.write(_pem_key(server_key))
    with open(paths["other-ca.pem"], "wb") as handle:
        handle.write(other_ca.public_bytes(serialization.Encoding.PEM))
    return paths
