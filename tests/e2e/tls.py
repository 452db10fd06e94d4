"""Certificates for the TLS tests, made fresh for each test: a CA, a server certificate for
127.0.0.1 and localhost, client certificates (valid, expired, or signed by another CA)."""

import datetime
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
import ipaddress


def _name(**parts):
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts.items()])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Ca:
    def __init__(self, cn):
        self.key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = _name(CN=cn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, subject, server=False, expired=False):
        """A certificate for `subject` (a dict of C, O, OU, CN) and its key, as PEM."""
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired \
            else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
        b = (x509.CertificateBuilder().subject_name(_name(**subject)).issuer_name(self.name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            # Client authentication too: gateways present theirs to each other (mutual TLS).
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                       ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)


class CertSet:
    """Files in `directory`: ca.pem, server.pem/server.key and client certificates."""

    def __init__(self, directory, client_auth="none", principal="dn", server_cn="sluice-test"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = Ca("Sluice test CA")
        self.client_auth = client_auth
        self.principal = principal
        self.ca_path = self._write("ca.pem", self.ca.pem())
        self.cert_path, self.key_path = self.server_cert(server_cn)

    def _write(self, name, data):
        p = self.dir / name
        p.write_bytes(data)
        return p

    def server_cert(self, cn, cert_name="server.pem", key_name="server.key"):
        """(Re)writes the server certificate and key with common name `cn`."""
        cert, key = self.ca.issue({"CN": cn}, server=True)
        # Key first, then certificate: a reader between the two sees a mismatch and
        # keeps what it had.
        key_path = self._write(key_name, key)
        cert_path = self._write(cert_name, cert)
        return cert_path, key_path

    def client_cert(self, name, subject, expired=False, ca=None):
        """Writes a client certificate; returns (cert path, key path)."""
        cert, key = (ca or self.ca).issue(subject, expired=expired)
        return self._write(f"{name}.pem", cert), self._write(f"{name}.key", key)

    def server_args(self):
        args = ["--tls-cert", str(self.cert_path), "--tls-key", str(self.key_path),
                "--tls-client-auth", self.client_auth, "--tls-principal", self.principal]
        if self.client_auth != "none":
            args += ["--tls-client-ca", str(self.ca_path)]
        return args

    def context(self, client=None):
        """A client-side ssl.SSLContext trusting the CA, with `client` (cert, key) if given."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        if client:
            ctx.load_cert_chain(str(client[0]), str(client[1]))
        return ctx


def tls_connect(addr, ctx, server_hostname="127.0.0.1"):
    host, port = addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=15)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def peer_cn(sock):
    """The common name of the certificate the server presented."""
    der = sock.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
