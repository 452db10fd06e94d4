"""A million records produced with a real client, compacted, then read straight from the
topic's folder by PyArrow, DuckDB, Polars and Spark, with no Sluice code involved."""

import os
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Sluice

N = 1_000_000
PARTITIONS = 8
TOPIC = "table"


def key(i):
    return None if i % 7 == 0 else f"k{i}".encode()


def value(i):
    return None if i % 11 == 0 else f"v{i}:{'x' * (i % 50)}".encode()


def headers(i):
    return [("i", str(i).encode()), ("dup", b"a"), ("dup", None)]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    base = tmp_path_factory.mktemp("readers")
    s = Sluice(base / "data").start()
    admin = AdminClient({"bootstrap.servers": s.bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1, config={"retention.ms": "-1"})])[
        TOPIC].result(30)
    p = Producer({"bootstrap.servers": s.bootstrap, "enable.idempotence": True,
                  "linger.ms": 20, "compression.type": "lz4", "batch.size": 1 << 20})
    started = int(time.time() * 1000)
    for i in range(N):
        while True:
            try:
                p.produce(TOPIC, value(i), key(i), partition=i % PARTITIONS, headers=headers(i))
                break
            except BufferError:
                p.poll(0.1)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    ended = int(time.time() * 1000)
    report = s.compact()
    assert report["records"] == N, report
    yield base / "data" / "objects" / "topics" / TOPIC, (started, ended)
    s.stop()


def test_pyarrow_reads_every_record_once_as_produced(table):
    import pyarrow.dataset as ds
    root, (started, ended) = table
    t = ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["partition", "offset", "timestamp", "key", "value", "headers"])
    assert t.num_rows == N
    rows = sorted(zip(t["offset"].to_pylist(), t["partition"].to_pylist(), range(N)))
    keys, values, hdrs = t["key"].to_pylist(), t["value"].to_pylist(), t["headers"].to_pylist()
    ts = t["timestamp"].to_pylist()
    seen = set()
    for offset, partition, row in rows:
        i = offset * PARTITIONS + partition
        assert i not in seen, f"record {i} twice"
        seen.add(i)
        assert keys[row] == key(i), i
        assert values[row] == value(i), i
        assert [(h["key"], h["value"]) for h in hdrs[row]] == [(k, v) for k, v in headers(i)], i
        assert started - 1000 <= ts[row].timestamp() * 1000 <= ended + 1000
    assert seen == set(range(N))


def test_duckdb_reads_the_table(table):
    import duckdb
    root, _ = table
    src = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    per = duckdb.sql(f"""
        SELECT partition, count(*), count(DISTINCT "offset"), min("offset"), max("offset")
        FROM {src} GROUP BY partition ORDER BY partition""").fetchall()
    n = N // PARTITIONS
    assert per == [(p, n, n, 0, n - 1) for p in range(PARTITIONS)]
    wrong = duckdb.sql(f"""
        WITH r AS (SELECT *, "offset" * {PARTITIONS} + partition AS i FROM {src})
        SELECT count(*) FROM r WHERE
            key IS DISTINCT FROM (CASE WHEN i % 7 = 0 THEN NULL ELSE ('k' || i)::BLOB END)
            OR value IS DISTINCT FROM
                (CASE WHEN i % 11 = 0 THEN NULL ELSE ('v' || i || ':' || repeat('x', (i % 50)::INT))::BLOB END)
            OR len(headers) <> 3
            OR headers[1].key <> 'i' OR headers[1].value <> (i::VARCHAR)::BLOB
            OR headers[2].key <> 'dup' OR headers[3].key <> 'dup' OR headers[3].value IS NOT NULL
        """).fetchall()[0][0]
    assert wrong == 0


def test_polars_reads_the_table(table):
    import polars as pl
    root, _ = table
    lf = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    per = (lf.group_by("partition")
             .agg(pl.len().alias("n"), pl.col("offset").n_unique().alias("distinct"),
                  pl.col("offset").min().alias("lo"), pl.col("offset").max().alias("hi"))
             .sort("partition").collect())
    n = N // PARTITIONS
    assert per.rows() == [(p, n, n, 0, n - 1) for p in range(PARTITIONS)]
    i = pl.col("offset") * PARTITIONS + pl.col("partition")
    expected_key = (pl.when(i % 7 == 0).then(None)
                    .otherwise(pl.concat_str([pl.lit("k"), i.cast(pl.String)]))
                    .cast(pl.Binary))
    wrong = lf.filter(pl.col("key").ne_missing(expected_key)
                      | (pl.col("headers").list.len() != 3)).select(pl.len()).collect().item()
    assert wrong == 0


def test_spark_reads_the_table(table):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    root, _ = table
    spark = (SparkSession.builder.master("local[1]").appName("sluice-e2e")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    try:
        df = spark.read.parquet(str(root))
        per = (df.groupBy("partition")
                 .agg(F.count("*"), F.countDistinct("offset"), F.min("offset"), F.max("offset"))
                 .orderBy("partition").collect())
        n = N // PARTITIONS
        assert [tuple(r) for r in per] == [(p, n, n, 0, n - 1) for p in range(PARTITIONS)]
        i = F.col("offset") * PARTITIONS + F.col("partition")
        expected_key = F.when(i % 7 == 0, F.lit(None)).otherwise(
            F.concat(F.lit("k"), i.cast("string")).cast("binary"))
        wrong = df.filter(~F.col("key").eqNullSafe(expected_key)
                          | (F.size("headers") != 3)
                          | (F.col("headers")[0]["key"] != "i")).count()
        assert wrong == 0
    finally:
        spark.stop()
