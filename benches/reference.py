"""Physical references on this machine, to read the other figures against: TCP loopback
bandwidth (one connection, 1 MiB writes) and the local disk's fsync rate (4 KiB write +
fsync, in the data directory's file system).

    python3 benches/reference.py [--dir DIR]
"""

import argparse
import json
import os
import socket
import tempfile
import threading
import time


def loopback(seconds=3.0, chunk=1 << 20):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    received = [0]

    def sink():
        conn, _ = srv.accept()
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if not n:
                break
            received[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    data = b"\0" * chunk
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        c.sendall(data)
    c.close()
    t.join()
    elapsed = time.perf_counter() - start
    return received[0] / elapsed / 1e6


def fsyncs(directory, seconds=3.0):
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        block = b"x" * 4096
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".")
    a = ap.parse_args()
    print(json.dumps({"loopback_mb_per_s": round(loopback()), "fsyncs_per_s": round(fsyncs(a.dir))}))


if __name__ == "__main__":
    main()
