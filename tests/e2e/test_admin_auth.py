"""`/admin` needs the admin token when one is configured (loopback callers only when none
is: the rest of the suite calls it from 127.0.0.1 without one); metrics and health stay
open; every refusal is counted."""

import json
import subprocess
import urllib.error
import urllib.request

from conftest import BIN, Sluice, http_get


def post(url, token=None):
    req = urllib.request.Request(url, method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}


def test_admin_requires_the_token(tmp_dir):
    token_file = tmp_dir / "admin-token"
    token_file.write_text("  correct-horse-battery-staple\n")
    server = Sluice(tmp_dir / "data", ["--admin-token-file", str(token_file)]).start()
    url = f"http://{server.http}/admin/compact"

    status, body, headers = post(url)
    assert status == 401 and headers.get("www-authenticate") == "Bearer", (status, body)
    assert post(url, "wrong")[0] == 401
    assert post(url, "correct-horse-battery-stapl")[0] == 401
    status, body, _ = post(url, "correct-horse-battery-staple")
    assert status == 200 and "segments" in json.loads(body)

    # The CLI sends the token from the same kind of file; without it, it is refused.
    ok = subprocess.run([str(BIN), "compact", "--server", server.http, "--admin-token-file", str(token_file)],
                        capture_output=True, timeout=120)
    assert ok.returncode == 0, ok.stderr.decode()
    refused = subprocess.run([str(BIN), "compact", "--server", server.http], capture_output=True, timeout=60)
    assert refused.returncode != 0 and b"401" in refused.stderr

    # Metrics and health need nothing, and count the refusals.
    assert http_get(f"http://{server.http}/healthz")[0] == 200
    assert server.metric('sluice_auth_failures_total{listener="http",mechanism="bearer"}') == 4
    server.stop()


def test_an_empty_token_file_is_refused_at_start(tmp_dir):
    token_file = tmp_dir / "empty"
    token_file.write_text("\n")
    proc = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_dir / "d"), "--kafka-listen", "127.0.0.1:0",
                           "--http-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
                           "--admin-token-file", str(token_file)], capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"is empty" in proc.stderr


def test_an_administrator_from_the_user_store_may_call_admin(tmp_dir):
    import base64
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    token_file = tmp_dir / "admin-token"
    token_file.write_text("t0ken\n")
    server = Sluice(tmp_dir / "data", ["--admin-token-file", str(token_file), "--admin-user", "root",
                                       "--super-users", "User:ops"],
                    env={"SLUICE_ADMIN_PASSWORD": "root-pw"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": server.bootstrap})
        for f in admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), p)
            for u, p in [("ops", b"ops-pw"), ("dev", b"dev-pw")]
        ]).values():
            f.result(30)
        url = f"http://{server.http}/admin/compact"

        def basic(user, password):
            req = urllib.request.Request(url, method="POST")
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, {}
            except urllib.error.HTTPError as e:
                return e.code, {k.lower(): v for k, v in e.headers.items()}

        # Super users (the --admin-user and --super-users) with their passwords.
        assert basic("root", "root-pw")[0] == 200
        assert basic("ops", "ops-pw")[0] == 200
        # A user who is not a super user, a wrong password, an unknown user.
        status, headers = basic("dev", "dev-pw")
        assert status == 401 and headers.get("www-authenticate") == 'Basic realm="sluice"'
        assert basic("root", "wrong")[0] == 401
        assert basic("nobody", "x")[0] == 401
        assert server.metric('sluice_auth_failures_total{listener="http",mechanism="basic"}') == 3
    finally:
        server.stop()
