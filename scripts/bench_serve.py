"""The server's numbers: 64 concurrent single-text callers against `modernbert serve` (POST
/embed on keep-alive connections), coalescing on and off, and one sequential caller against the
same server (the server's overhead over the in-process call is that p50 minus the in-process
p50 of examples/concurrent_callers with one caller).

    python3 scripts/bench_serve.py BIN MODEL_DIR [CALLERS] [CALLS_PER_CALLER]

The callers are 8 processes x CALLERS/8 threads (one Python process would be GIL-bound before the
server is). Prints one JSON line per setting."""

import http.client
import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time

WORDS = ["model", "fast", "text", "embedding", "query", "the", "of", "search", "document", "vector"]


def text(c, k, words=24):
    return " ".join(WORDS[(c * 7 + k * 3 + w) % len(WORDS)] for w in range(words))


def start(bin_, model, *flags):
    p = subprocess.Popen([bin_, "serve", "--model", model, "--device", "cpu", "--port", "0", *flags],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("listening on http://"):
            return p, int(line.rsplit(":", 1)[1])
    raise RuntimeError("server did not start")


def caller(port, c, calls, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    lat = []
    for k in range(calls):
        body = json.dumps({"inputs": text(c, k)})
        t0 = time.perf_counter()
        conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        lat.append((time.perf_counter() - t0) * 1e6)
        assert r.status == 200, data
    out.extend(lat)


def process(port, first, threads, calls, barrier, q):
    lat = []
    ts = [threading.Thread(target=caller, args=(port, first + i, calls, lat)) for i in range(threads)]
    barrier.wait()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(lat)


def load(port, callers, calls):
    procs = min(8, callers)
    barrier = mp.Barrier(procs + 1)
    q = mp.Queue()
    ps = [mp.Process(target=process, args=(port, i * (callers // procs), callers // procs, calls, barrier, q))
          for i in range(procs)]
    for p in ps:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    lat = [x for _ in ps for x in q.get()]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join()
    lat.sort()
    return len(lat) / wall, lat[len(lat) // 2], lat[int((len(lat) - 1) * 0.99)]


def main():
    bin_, model = sys.argv[1], sys.argv[2]
    callers = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    only = sys.argv[5] if len(sys.argv) > 5 else None
    for flags in [(), ("--no-coalesce",)] if only is None else [()]:
        server, port = start(bin_, model, "--max-concurrent-requests", "1024", *flags)
        try:
            caller(port, 0, 5, [])  # warm-up
            rate, p50, p99 = load(port, callers, calls)
            print(json.dumps({"route": "/embed", "coalesce": not flags, "callers": callers,
                              "calls": callers * calls, "calls_per_s": rate, "p50_us": p50, "p99_us": p99}))
            one = []
            caller(port, 0, 200, one)
            one.sort()
            print(json.dumps({"route": "/embed", "coalesce": not flags, "callers": 1, "calls": 200,
                              "p50_us": one[100], "p99_us": one[197]}))
            # The HTTP round trip alone (this client, loopback, the router): GET /health.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            health = []
            for _ in range(500):
                t0 = time.perf_counter()
                conn.request("GET", "/health")
                conn.getresponse().read()
                health.append((time.perf_counter() - t0) * 1e6)
            health.sort()
            print(json.dumps({"route": "/health", "callers": 1, "calls": 500, "p50_us": health[250]}))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
