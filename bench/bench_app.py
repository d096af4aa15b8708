"""The web app under load on loopback: ``--requests`` photos (default 200), ``--concurrency`` at a
time (8), posted to ``python -m runway_cnn.app`` (a real uvicorn server in its own process), every
answer checked against ``Predictor``; p50 / p95 latency of the server and of ``Predictor``
called directly on the same photos (one at a time, and from as many threads).

    PYTHONPATH=. python bench/bench_app.py --model RUN_OR_EXPORT [--index INDEX] \
        [--photos /work/shared/data/clothing-small/test] [--requests 200] [--concurrency 8]

With ``--index``, every request also searches the retrieval index (its model embeds the photo),
so the server does more per photo than ``Predictor.predict``; both figures are printed.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import httpx

from runway_cnn.inference.batch import list_images
from runway_cnn.inference.predictor import Predictor


def percentiles(seconds: Sequence[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms"


def timed(calls: int, concurrency: int, call: Callable[[int], bool]
          ) -> tuple[list[float], int, float]:
    """(latency of each call, how many returned True, wall seconds), ``concurrency`` at a time."""
    def one(i: int) -> tuple[float, bool]:
        start = time.perf_counter()
        ok = call(i)
        return time.perf_counter() - start, ok

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(calls)))
    return [r[0] for r in results], sum(r[1] for r in results), time.perf_counter() - start


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "runway_cnn.app", "--model", args.model,
               "--port", str(port)] + (["--index", args.index] if args.index else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
    server.kill()
    raise SystemExit("the server did not start in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index")
    parser.add_argument("--photos", default="/work/shared/data/clothing-small/test")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    photos = list_images([args.photos])[:args.requests]
    data = [p.read_bytes() for p in photos]
    predictor = Predictor(args.model)
    expected = [predictor.predict([str(p)])[0] for p in photos]  # also the warm-up
    name = predictor.version_dir.parent.name
    print(f"{args.requests} requests, {args.concurrency} at a time, {len(photos)} photos of "
          f"{args.photos}; model {predictor.version_dir}; load average before: "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    def direct(i: int) -> bool:
        return predictor.predict([str(photos[i % len(photos)])])[0] == expected[i % len(photos)]

    for concurrency in (1, args.concurrency):
        seconds, ok, wall = timed(args.requests, concurrency, direct)
        print(f"Predictor.predict, {concurrency} thread(s): {percentiles(seconds)}   "
              f"{args.requests / wall:5.1f} photos/s   {ok}/{args.requests} equal")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(args, port)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                              limits=httpx.Limits(max_connections=args.concurrency))

        def post(i: int) -> bool:
            j = i % len(photos)
            response = client.post("/api/predict", files={"file": (photos[j].name, data[j],
                                                                   "image/jpeg")})
            return response.status_code == 200 and \
                response.json()["predictions"][name] == expected[j]

        timed(args.concurrency, args.concurrency, post)  # warm-up of the server's threads
        seconds, ok, wall = timed(args.requests, args.concurrency, post)
        print(f"server (POST /api/predict{' + similar items' if args.index else ''}), "
              f"{args.concurrency} concurrent: {percentiles(seconds)}   "
              f"{args.requests / wall:5.1f} photos/s   {ok}/{args.requests} equal to Predictor")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if ok != args.requests:
        raise SystemExit(f"{args.requests - ok} answers differ from Predictor's")


if __name__ == "__main__":
    main()
