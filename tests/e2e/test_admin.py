"""Topic and config administration through confluent-kafka's AdminClient and `sluice topic`."""

import subprocess

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic)

from conftest import BIN


def admin(server):
    return AdminClient({"bootstrap.servers": server.bootstrap})


def error_of(future):
    with pytest.raises(KafkaException) as e:
        future.result(30)
    return e.value.args[0]


def test_topics_and_configs(sluice):
    a = admin(sluice)
    # validate_only creates nothing.
    a.create_topics([NewTopic("adm", 2, 1)], validate_only=True)["adm"].result(30)
    assert "adm" not in a.list_topics(timeout=10).topics
    a.create_topics([NewTopic("adm", 2, 1, config={"retention.ms": "1000"})])["adm"].result(30)
    assert len(a.list_topics(timeout=10).topics["adm"].partitions) == 2
    # Errors carry the right codes.
    assert error_of(a.create_topics([NewTopic("adm", 2, 1)])["adm"]).name() == "TOPIC_ALREADY_EXISTS"
    assert error_of(a.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"]).name() == "TOPIC_EXCEPTION"  # INVALID_TOPIC_EXCEPTION (17)
    bad_config = a.create_topics([NewTopic("adm2", 1, 1, config={"cleanup.policy": "compact"})])["adm2"]
    assert error_of(bad_config).name() == "INVALID_CONFIG"
    unknown = a.create_topics([NewTopic("adm3", 1, 1, config={"no.such.config": "1"})])["adm3"]
    assert error_of(unknown).name() == "INVALID_CONFIG"

    res = ConfigResource(ConfigResource.Type.TOPIC, "adm")
    configs = a.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].value == "1000"
    assert not configs["retention.ms"].is_default
    assert configs["max.message.bytes"].is_default

    change = ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([change])[change].result(30)
    configs = a.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].is_default
    assert configs["message.timestamp.type"].value == "LogAppendTime"

    a.create_partitions([NewPartitions("adm", 5)])["adm"].result(30)
    assert len(a.list_topics(timeout=10).topics["adm"].partitions) == 5
    assert error_of(a.create_partitions([NewPartitions("adm", 3)])["adm"]).name() == "INVALID_PARTITIONS"

    cluster = a.describe_cluster().result(30)
    assert len(cluster.nodes) == 1 and cluster.cluster_id

    a.delete_topics(["adm"])["adm"].result(30)
    assert "adm" not in a.list_topics(timeout=10).topics
    assert error_of(a.delete_topics(["adm"])["adm"]).name() == "UNKNOWN_TOPIC_OR_PART"


def sluice_cli(server, *args):
    out = subprocess.run([str(BIN), "topic", *args, "--bootstrap", server.bootstrap],
                         capture_output=True, timeout=30)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


def test_sluice_topic_subcommands(sluice):
    code, out, _ = sluice_cli(sluice, "create", "cli", "--partitions", "3", "--config", "retention.ms=5000")
    assert code == 0 and "created topic cli" in out
    code, out, err = sluice_cli(sluice, "create", "cli")
    assert code != 0 and "already exists" in err
    subprocess.run(["kcat", "-P", "-b", sluice.bootstrap, "-t", "cli", "-p", "1"], input=b"a\nb\n",
                   check=True, timeout=30)
    code, out, _ = sluice_cli(sluice, "list")
    assert code == 0 and any(line.startswith("cli\t3\t") for line in out.splitlines())
    code, out, _ = sluice_cli(sluice, "describe", "cli")
    assert code == 0
    assert "partition 1: offsets 0..2" in out
    assert "retention.ms=5000 (set)" in out
    code, out, _ = sluice_cli(sluice, "delete", "cli")
    assert code == 0
    code, out, _ = sluice_cli(sluice, "list")
    assert "cli\t" not in out


def test_log_append_time_topics_stamp_records(sluice):
    a = admin(sluice)
    a.create_topics([NewTopic("lat", 1, 1, config={"message.timestamp.type": "LogAppendTime"})])["lat"].result(30)
    subprocess.run(["kcat", "-P", "-b", sluice.bootstrap, "-t", "lat"], input=b"x\n", check=True, timeout=30)
    out = subprocess.run(["kcat", "-C", "-b", sluice.bootstrap, "-t", "lat", "-e", "-f", "%T %s\n"],
                         capture_output=True, check=True, timeout=30).stdout.split()
    # kcat prints the record timestamp; a LogAppendTime topic replaces the producer's.
    assert out[1] == b"x" and int(out[0]) > 1_600_000_000_000
