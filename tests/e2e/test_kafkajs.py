"""kafkajs: produce with every codec, read back through kafkajs's fetch and decoder."""

import base64
import json
import subprocess

from readers import NODE_DIR, parse_fetched
from records import CODECS, PARTITIONS, check, record

N = 25_000  # per codec: 100k records in all


def b64(b):
    return base64.b64encode(b).decode()


def test_round_trip_every_codec(sluice, tmp_dir):
    for codec in CODECS:
        topic = f"js-{codec}"
        src = tmp_dir / f"{topic}.in.jsonl"
        dst = tmp_dir / f"{topic}.out.jsonl"
        with open(src, "w") as f:
            for i in range(N):
                r = record(topic, i)
                f.write(json.dumps({
                    "partition": r["partition"], "key": b64(r["key"]), "value": b64(r["value"]),
                    "headers": [[k, b64(v)] for k, v in r["headers"]], "timestamp": r["timestamp"],
                }) + "\n")
        run = subprocess.run(["node", str(NODE_DIR / "roundtrip.js"), sluice.bootstrap, topic, codec,
                              str(src), str(dst)], capture_output=True, timeout=300)
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        summary = json.loads(run.stdout.decode().strip().splitlines()[-1])
        assert sorted(int(e["high"]) for e in summary["ends"]) == [N // PARTITIONS] * PARTITIONS
        # The first record's timestamp maps to offset 0 in every partition that has one.
        assert all(int(e["offset"]) == 0 for e in summary["firstTs"])
        check(topic, N, parse_fetched(dst, PARTITIONS))
