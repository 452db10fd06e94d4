"""JWTs for the OAUTHBEARER tests: RSA and EC P-256 keys, their JWKs, and tokens signed
with RS256 or ES256 (made with `cryptography`, as an identity provider would)."""

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int, size: int = 0) -> str:
    size = size or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(size, "big"))


class Key:
    """A signing key: `rsa` (RS256) or `ec` (ES256), with its key id."""

    def __init__(self, kind="rsa", kid=None):
        self.kind = kind
        self.kid = kid
        if kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def jwk(self):
        pub = self.private.public_key().public_numbers()
        if self.kind == "rsa":
            k = {"kty": "RSA", "n": _int(pub.n), "e": _int(pub.e)}
        else:
            k = {"kty": "EC", "crv": "P-256", "x": _int(pub.x, 32), "y": _int(pub.y, 32)}
        k.update({"use": "sig", "alg": self.alg})
        if self.kid:
            k["kid"] = self.kid
        return k

    def pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def sign(self, claims, header=None):
        h = {"alg": self.alg, "typ": "JWT", **({"kid": self.kid} if self.kid else {}), **(header or {})}
        signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        if self.kind == "rsa":
            sig = self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input.decode()}.{b64url(sig)}"


def jwks(*keys):
    return json.dumps({"keys": [k.jwk() for k in keys]})


def claims(sub, lifetime=300, iss="https://idp.example", aud="sluice", **extra):
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + lifetime, "iss": iss, "aud": aud}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def unsecured(claims_):
    """A token with `alg: none`, as librdkafka's built-in unsecured JWT makes."""
    return f"{b64url(json.dumps({'alg': 'none'}).encode())}.{b64url(json.dumps(claims_).encode())}."
