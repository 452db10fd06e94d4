"""A three-member kafkajs group: balanced assignment, every record consumed exactly once,
committed offsets at the log end."""

import json
import subprocess
from pathlib import Path

from test_groups import PARTS

NODE_DIR = Path(__file__).parent / "node"


def test_kafkajs_group(sluice):
    topic = "js-group"
    out = subprocess.run(["node", str(NODE_DIR / "group.js"), sluice.bootstrap, topic, "js", str(PARTS), "1800"],
                         capture_output=True, timeout=180)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert sorted(len(a) for a in result["assignments"]) == [2, 2, 2]
    assert sorted(p for a in result["assignments"] for p in a) == list(range(PARTS))
    assert sorted(result["values"]) == list(range(1800))
    assert sorted(int(o["offset"]) for o in result["committed"]) == [300] * PARTS
