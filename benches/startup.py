#!/usr/bin/env python3
"""Time from spawning `sluice serve` to its listener accepting (the "kafka listening" line).

    python3 benches/startup.py target/release/sluice DATA_DIR [RUNS]
"""

import statistics
import subprocess
import sys
import time


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen([binary, "serve", "--data-dir", data_dir, "--kafka-listen", "127.0.0.1:0",
                              "--http-listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for line in p.stdout:
            if line.startswith(b"kafka listening"):
                break
        times.append((time.perf_counter() - t0) * 1000)
        p.terminate()
        p.wait()
    print(f"startup to listening: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms, {runs} runs")


if __name__ == "__main__":
    main()
