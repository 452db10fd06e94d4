#!/usr/bin/env python3
"""Two `sluice` binaries side by side (an old build against a new one), in alternating
rounds on this machine, driven by `sluice-bench` (librdkafka): produce, open loop, 1 KiB
records, 8 partitions, acks=all; then tail reads of what was just produced (by default the
last 200 MB, 2 consumers, median of five).
One fresh `sluice serve` (embedded) per round and binary; compaction deferred.

    python3 benches/ab_bench.py OLD_BINARY NEW_BINARY [--seconds 15] [--rounds 3]

Prints a Markdown table (medians, and each round) for docs/benchmarks.md.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from kafka_bench import Server, bench  # noqa: E402


def one_round(binary, work, seconds, last):
    s = Server(work, "--compaction-interval", "1h", "--compaction-max-wal-bytes", "1000GiB",
               binary=Path(binary))
    try:
        p = bench("produce", "--bootstrap", s.bootstrap, "--topic", "ab", "--partitions", "8",
                  "--size", "1024", "--seconds", str(seconds), "--metrics", s.metrics)
        # A read of the last 200 MB takes a fraction of a second: the median of five.
        c = statistics.median(
            bench("consume", "--bootstrap", s.bootstrap, "--topic", "ab", "--partitions", "8",
                  "--consumers", "2", "--last", str(last), "--metrics", s.metrics)["consume"]["mb_per_s"]
            for _ in range(5))
        return {"produce_mb_s": p["produce"]["mb_per_s"], "p99_ms": p["latency_ms"]["p99"],
                "consume_mb_s": c}
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--last", type=int, default=200_000, help="records of 1 KiB each tail read reads")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-bench-"))
    runs = {"old": [], "new": []}
    for i in range(a.rounds):
        # Alternate which goes first, so drift on a shared machine hits both alike.
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        for which in order:
            r = one_round(getattr(a, which), work, a.seconds, a.last)
            runs[which].append(r)
            print(f"round {i + 1} {which}: {r}", file=sys.stderr)
    keys = [("produce_mb_s", "produce MB/s"), ("p99_ms", "produce p99 ms"), ("consume_mb_s", "tail consume MB/s")]
    print("| | old | new | new/old | rounds (old; new) |")
    print("|---|---|---|---|---|")
    for k, label in keys:
        o = statistics.median(r[k] for r in runs["old"])
        n = statistics.median(r[k] for r in runs["new"])
        each = ", ".join(f"{r[k]:.0f}" for r in runs["old"]) + "; " + ", ".join(f"{r[k]:.0f}" for r in runs["new"])
        print(f"| {label} | {o:.1f} | {n:.1f} | {n / o:.2f} | {each} |")


if __name__ == "__main__":
    main()
