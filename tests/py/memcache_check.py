"""Memcached text-protocol load with checked values (tests/tests/servers.rs).

usage: memcache_check.py HOST PORT CONNS SECS

CONNS threads, one connection each, alternate `set` of a value of random
length (0-3000 bytes) and `get` of the same key for SECS seconds; every
reply is compared with what was stored. Prints one line
`ok=N bad=N conns=N` and exits 1 if any reply was wrong or a connection
failed.
"""
import random
import socket
import sys
import threading
import time

HOST, PORT, N, SECS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ok = [0] * N
bad = [0] * N
failed = []


def worker(i):
    try:
        s = socket.create_connection((HOST, PORT), timeout=10)
        f = s.makefile("rb")
        rng = random.Random(i)
        end = time.time() + SECS
        k = 0
        while time.time() < end:
            key = f"k{i}_{k % 50}"
            val = f"v{i}-{k}-" + "x" * rng.randint(0, 3000)
            s.sendall(f"set {key} 0 0 {len(val)}\r\n{val}\r\n".encode())
            if f.readline() != b"STORED\r\n":
                bad[i] += 1
            s.sendall(f"get {key}\r\n".encode())
            h = f.readline()
            if not h.startswith(b"VALUE"):
                bad[i] += 1
                continue
            n = int(h.split()[3])
            d = f.read(n + 2)
            if f.readline() != b"END\r\n" or d[:-2].decode() != val:
                bad[i] += 1
            else:
                ok[i] += 1
            k += 1
        s.close()
    except Exception as e:  # noqa: BLE001 - reported and counted
        failed.append(f"conn {i}: {e}")


ts = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(f"ok={sum(ok)} bad={sum(bad)} conns={N}")
for f in failed[:5]:
    print(f)
sys.exit(1 if sum(bad) or failed or sum(ok) == 0 else 0)
