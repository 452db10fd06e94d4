"""Docker for the tests that run Sluice in containers: dockerd started when it is not running
(and stopped again at the end of the session), images built here by deploy/build-image.sh
(nothing is pulled), and swarm mode."""

import os
import subprocess
import time

import pytest

from conftest import BIN, ROOT

IMAGE = "sluice:e2e"


def run(*args, timeout=300, check=True, env=None):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


def docker_ok():
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Docker:
    """The Docker daemon: the one running, or one started here."""

    def __init__(self, log_path):
        self.proc = None
        self.swarm_initialised = False
        if docker_ok():
            return
        self.proc = subprocess.Popen(["dockerd"], stdout=open(log_path, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not docker_ok():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start; see {log_path}")
            time.sleep(0.2)

    def swarm(self):
        """Swarm mode on this one node (initialised here unless it already was)."""
        state = run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        if state != "active":
            run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
            self.swarm_initialised = True

    def stop(self):
        if self.swarm_initialised:
            run("docker", "swarm", "leave", "--force", check=False)
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def docker(tmp_path_factory):
    d = Docker(tmp_path_factory.mktemp("docker") / "dockerd.log")
    yield d
    d.stop()


@pytest.fixture(scope="session")
def images(docker):
    """sluice:e2e (the binary under test), sluice-etcd:local, sluice-moto:local and
    sluice-haproxy:local."""
    out = subprocess.run([str(ROOT / "deploy" / "build-image.sh"), "--binary", str(BIN), "all"],
                         capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, TAG=IMAGE))
    assert out.returncode == 0, out.stdout + out.stderr
    sizes = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    return {"sluice": IMAGE, "sizes": sizes}
