"""OAUTHBEARER over SASL_SSL with real clients: confluent-kafka fetches tokens from an
OpenID Connect token endpoint (client credentials, as with Keycloak or Okta), kafka-python
brings its own, and the gateway checks them against a JWKS file: RS256 and ES256, issuer and audience, expiry,
keys rotated on disk, ACLs by the token's subject. Expired, wrongly signed, unsigned and
foreign tokens are refused and counted (kcat's
unsecured JWTs among them: Debian's kcat is built without OIDC); a session ends with its token (KIP-368)."""

import base64
import json
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaConsumer
from kafka.net.sasl.oauth import AbstractTokenProvider
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

import jwt
from conftest import Sluice, wait_for
from test_malformed import closed_by_server, frame, header, read_frame
from tls import CertSet

ISSUER = "https://idp.example"
AUDIENCE = "sluice"


class TokenEndpoint:
    """An OAuth 2.0 token endpoint for the client credentials grant: a client's id is its
    token's subject."""

    def __init__(self, key, secrets):
        self.key = key
        self.secrets = secrets
        self.issued = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = parse_qs(body)
                creds = self.headers.get("Authorization", "")
                client = secret = None
                if creds.startswith("Basic "):
                    client, _, secret = base64.b64decode(creds[6:]).decode().partition(":")
                if form.get("grant_type") != ["client_credentials"] or endpoint.secrets.get(client) != secret:
                    self.send_response(401)
                    self.end_headers()
                    return
                endpoint.issued += 1
                token = endpoint.key.sign(jwt.claims(client, iss=ISSUER, aud=AUDIENCE))
                out = json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def env(tmp_dir):
    certs = CertSet(tmp_dir / "certs")
    rsa, ec = jwt.Key("rsa", kid="rsa-1"), jwt.Key("ec", kid="ec-1")
    jwks = tmp_dir / "jwks.json"
    jwks.write_text(jwt.jwks(rsa, ec))
    s = Sluice(tmp_dir / "data",
               ["--oauth-jwks", str(jwks), "--oauth-issuer", ISSUER, "--oauth-audience", AUDIENCE,
                "--admin-user", "admin", "--authorizer", "acl", "--connections-max-reauth", "1h"],
               env={"SLUICE_ADMIN_PASSWORD": "admin-secret"},
               kafka_listeners=["SASL_SSL", "SASL_PLAINTEXT"], tls=certs).start()
    idp = TokenEndpoint(rsa, {"svc-orders": "s3cret"})
    admin = AdminClient({**tls_conf(s, certs), "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": "admin", "sasl.password": "admin-secret"})
    for f in admin.create_acls([
        AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:svc-orders", "*",
                   op, AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.CREATE, AclOperation.DESCRIBE)
    ] + [AclBinding(ResourceType.GROUP, "orders-", ResourcePatternType.PREFIXED, "User:svc-orders", "*",
                    AclOperation.READ, AclPermissionType.ALLOW)]).values():
        f.result(30)
    yield s, certs, idp, rsa, ec, jwks
    idp.stop()
    s.stop()


def tls_conf(s, certs):
    return {"bootstrap.servers": s.kafka_by["SASL_SSL"], "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(certs.ca_path)}


def oidc_conf(s, certs, idp, client="svc-orders", secret="s3cret"):
    return {**tls_conf(s, certs), "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.id": client, "sasl.oauthbearer.client.secret": secret,
            "sasl.oauthbearer.token.endpoint.url": idp.url}


def token_conf(s, certs, token):
    """librdkafka with a token of the test's making."""
    def cb(_config):
        return token, time.time() + 300
    return {**tls_conf(s, certs), "sasl.mechanism": "OAUTHBEARER", "oauth_cb": cb}


def auth_errors(conf):
    """The authentication errors librdkafka reports within 15 s (none: it logged in)."""
    errors = []
    p = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        p.poll(0.2)
        found = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if found:
            return found
        try:
            p.list_topics(timeout=0.5)
            return []
        except Exception:
            pass
    return []


def test_oidc_clients_produce_and_consume_as_their_token_subject(env):
    s, certs, idp, rsa, ec, jwks = env
    # confluent-kafka (librdkafka 2.16) fetches a token and produces.
    p = Producer(oidc_conf(s, certs, idp))
    for i in range(3):
        p.produce("orders", f"order-{i}".encode(), partition=0)
    assert p.flush(30) == 0
    # The subject is the principal: a topic its ACLs do not cover is refused.
    errors = []
    p.produce("payments", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert errors and errors[0] is not None and errors[0].code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT), errors
    c = Consumer({**oidc_conf(s, certs, idp), "group.id": "orders-audit", "auto.offset.reset": "earliest"})
    c.subscribe(["orders"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"order-0", b"order-1", b"order-2"]
    # kafka-python with a token provider.
    class Provider(AbstractTokenProvider):
        def token(self):
            return rsa.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE))

    kc = KafkaConsumer("orders", bootstrap_servers=s.kafka_by["SASL_SSL"], security_protocol="SASL_SSL",
                       ssl_cafile=str(certs.ca_path), sasl_mechanism="OAUTHBEARER",
                       sasl_oauth_token_provider=Provider(), auto_offset_reset="earliest",
                       consumer_timeout_ms=10000)
    values = [m.value for m in kc]
    kc.close()
    assert values == [b"order-0", b"order-1", b"order-2"]
    assert idp.issued >= 1
    # ES256 tokens are accepted as well.
    p = Producer(token_conf(s, certs, ec.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE))))
    p.produce("orders", b"es256", partition=0)
    assert p.flush(30) == 0


def test_bad_tokens_are_refused_and_counted(env):
    s, certs, idp, rsa, ec, jwks = env
    stranger = jwt.Key("rsa", kid="rsa-1")
    bad = {
        "expired": rsa.sign(jwt.claims("svc-orders", lifetime=-120, iss=ISSUER, aud=AUDIENCE)),
        "not yet valid": rsa.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE, nbf=int(time.time()) + 600)),
        "other issuer": rsa.sign(jwt.claims("svc-orders", iss="https://evil.example", aud=AUDIENCE)),
        "other audience": rsa.sign(jwt.claims("svc-orders", iss=ISSUER, aud="another-service")),
        "unknown signer": stranger.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE)),
        "unsigned": jwt.unsecured(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE)),
    }
    for what, token in bad.items():
        assert auth_errors(token_conf(s, certs, token)), what
    assert s.metric('sluice_auth_failures_total{listener="SASL_SSL",mechanism="OAUTHBEARER"}') >= len(bad)
    # librdkafka's own unsecured JWTs (kcat) are refused too.
    out = subprocess.run(["kcat", "-b", s.kafka_by["SASL_SSL"], "-X", "security.protocol=SASL_SSL",
                          "-X", f"ssl.ca.location={certs.ca_path}", "-X", "sasl.mechanisms=OAUTHBEARER",
                          "-X", "enable.sasl.oauthbearer.unsecure.jwt=true",
                          "-X", "sasl.oauthbearer.config=principal=svc-orders",
                          "-L", "-m", "10"], capture_output=True, timeout=60)
    assert out.returncode != 0
    assert b"uthentication" in out.stderr, out.stderr.decode()
    # A client the token endpoint does not know gets no token and no session.
    assert auth_errors(oidc_conf(s, certs, idp, secret="wrong"))


def test_rotated_keys_are_picked_up_from_disk(env):
    s, certs, idp, rsa, ec, jwks = env
    new = jwt.Key("rsa", kid="rsa-2")
    token = new.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE))
    assert auth_errors(token_conf(s, certs, token))
    jwks.write_text(jwt.jwks(new, ec))

    def accepted():
        p = Producer(token_conf(s, certs, token))
        p.produce("orders", b"after rotation", partition=0)
        return p.flush(10) == 0

    wait_for("the new key", accepted, timeout=30)
    # The removed key's tokens are refused from then on.
    assert auth_errors(token_conf(s, certs, rsa.sign(jwt.claims("svc-orders", iss=ISSUER, aud=AUDIENCE))))


def plaintext(s):
    host, port = s.kafka_by["SASL_PLAINTEXT"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def test_a_session_ends_with_its_token(env):
    """KIP-368: with re-authentication on (1 h here), the session lifetime a client is
    given is the token's remaining life when that is shorter."""
    s, certs, idp, rsa, ec, jwks = env
    sock = plaintext(s)
    sock.sendall(frame(header(17, 1, 1) + struct.pack(">h", 11) + b"OAUTHBEARER"))
    resp = read_frame(sock)
    assert struct.unpack(">h", resp[4:6])[0] == 0
    assert b"OAUTHBEARER" in resp
    token = rsa.sign(jwt.claims("svc-orders", lifetime=90, iss=ISSUER, aud=AUDIENCE))
    message = f"n,,\x01auth=Bearer {token}\x01\x01".encode()
    sock.sendall(frame(header(36, 1, 2) + struct.pack(">i", len(message)) + message))
    body = read_frame(sock)[4:]
    code, msg_len = struct.unpack(">hh", body[:4])
    assert code == 0, code
    rest = body[4 + max(msg_len, 0):]
    auth_len = struct.unpack(">i", rest[:4])[0]
    lifetime_ms = struct.unpack(">q", rest[4 + auth_len:12 + auth_len])[0]
    assert 60_000 < lifetime_ms <= 90_000, lifetime_ms
    # A token naming another principal than the authorization id is refused.
    sock = plaintext(s)
    sock.sendall(frame(header(17, 1, 1) + struct.pack(">h", 11) + b"OAUTHBEARER"))
    read_frame(sock)
    message = f"n,a=admin,\x01auth=Bearer {token}\x01\x01".encode()
    sock.sendall(frame(header(36, 1, 2) + struct.pack(">i", len(message)) + message))
    assert struct.unpack(">h", read_frame(sock)[4:6])[0] == 58
    assert closed_by_server(sock)
