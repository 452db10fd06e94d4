"""The user store through Kafka's admin APIs (KIP-554), driven by confluent-kafka's admin
client: SCRAM credentials created, described, replaced and deleted, with Kafka's errors;
visible from every gateway of a cluster; stored as RFC 5802's keys, never the password."""

import hashlib
import hmac
import json
import subprocess

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from conftest import gateways as start_gateways

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512


def upsert(user, mechanism, iterations, password=b"pencil"):
    return UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations), password)


def alter(admin, alterations):
    return {u: f for u, f in admin.alter_user_scram_credentials(alterations).items()}


def described(admin, users=None):
    if users is None:
        return {u: sorted((c.mechanism, c.iterations) for c in d.scram_credential_infos)
                for u, d in admin.describe_user_scram_credentials().result(30).items()}
    out = {}
    for u, f in admin.describe_user_scram_credentials(users).items():
        d = f.result(30)
        out[u] = sorted((c.mechanism, c.iterations) for c in d.scram_credential_infos)
    return out


def error(future):
    with pytest.raises(KafkaException) as e:
        future.result(30)
    return e.value.args[0].name()


def test_scram_credentials_through_the_admin_api(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    for f in alter(admin, [upsert("alice", SHA256, 8192), upsert("alice", SHA512, 4096),
                           upsert("bob", SHA256, 16384)]).values():
        f.result(30)
    assert described(admin) == {"alice": [(SHA256, 8192), (SHA512, 4096)], "bob": [(SHA256, 16384)]}
    assert described(admin, ["bob"]) == {"bob": [(SHA256, 16384)]}

    # Replacing one credential, deleting another; the last one gone removes the user.
    for f in alter(admin, [upsert("alice", SHA256, 10000),
                           UserScramCredentialDeletion("alice", SHA512)]).values():
        f.result(30)
    assert described(admin, ["alice"]) == {"alice": [(SHA256, 10000)]}
    alter(admin, [UserScramCredentialDeletion("bob", SHA256)])["bob"].result(30)
    assert "bob" not in described(admin)

    # Kafka's errors, per user; a failing user's other changes do not apply.
    assert error(admin.describe_user_scram_credentials(["nobody"])["nobody"]) == "RESOURCE_NOT_FOUND"
    assert error(alter(admin, [UserScramCredentialDeletion("nobody", SHA256)])["nobody"]) == "RESOURCE_NOT_FOUND"
    assert error(alter(admin, [upsert("carol", SHA256, 100)])["carol"]) == "UNACCEPTABLE_CREDENTIAL"
    assert error(alter(admin, [upsert("carol", SHA256, 20000)])["carol"]) == "UNACCEPTABLE_CREDENTIAL"
    both = alter(admin, [upsert("alice", SHA512, 4096), UserScramCredentialDeletion("alice", SHA512)])
    assert error(both["alice"]) == "DUPLICATE_RESOURCE"
    assert described(admin, ["alice"]) == {"alice": [(SHA256, 10000)]}


def test_a_user_made_on_one_gateway_is_seen_on_another(tmp_dir, etcd, s3):
    a, b = start_gateways(tmp_dir, etcd, s3, 2, "users")
    on_a = AdminClient({"bootstrap.servers": a.bootstrap})
    alter(on_a, [upsert("dave", SHA512, 4096)])["dave"].result(30)
    on_b = AdminClient({"bootstrap.servers": b.bootstrap})
    assert described(on_b, ["dave"]) == {"dave": [(SHA512, 4096)]}
    # What etcd holds: the salt librdkafka chose, and keys that verify the password.
    out = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "get", "--prefix", ""],
                         capture_output=True, timeout=30, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    lines = out.stdout.decode().splitlines()
    pairs = dict(zip(lines[0::2], lines[1::2]))
    (value,) = [v for k, v in pairs.items() if k.endswith("users/dave")]
    record = json.loads(value)
    (cred,) = record["scram"]
    salted = hashlib.pbkdf2_hmac("sha512", b"pencil", bytes(cred["salt"]), 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha512).digest()
    assert bytes(cred["stored_key"]) == hashlib.sha512(client_key).digest()
    assert bytes(cred["server_key"]) == hmac.new(salted, b"Server Key", hashlib.sha512).digest()
    assert b"pencil" not in out.stdout
    for g in (a, b):
        g.stop()
