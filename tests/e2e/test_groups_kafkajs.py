"""Three-member kafkajs groups: balanced assignment, every record consumed exactly once
while members leave and join, committed offsets at the log end, and a restarted member
resuming where the group committed."""

import json
import subprocess
from pathlib import Path

from test_groups import PARTS

NODE_DIR = Path(__file__).parent / "node"


def test_kafkajs_group(sluice):
    out = subprocess.run(["node", str(NODE_DIR / "group.js"), sluice.bootstrap, "js-group", "js", str(PARTS)],
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert sorted(len(a) for a in result["settled"]) == [2, 2, 2]
    assert sorted(p for a in result["settled"] for p in a) == list(range(PARTS))
    assert sorted(result["values"]) == list(range(600)), "every record exactly once"
    assert sorted(int(o["offset"]) for o in result["committed"]) == [600 // PARTS] * PARTS
    assert sorted(result["late"]) == list(range(600, 630))
