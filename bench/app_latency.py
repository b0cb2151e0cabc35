"""Benchmark (issue 5): end-to-end request latency and throughput of the app, through gradio_client.

    python -m bench.app_latency --requests 20 --clients 4 --per-client 10

Starts ``python app.py`` (the real entry point, bundled model, no COCO model) in its own process, then per
backend: sequential requests from one client (median and p95 after two warm-up calls), and the same work
spread over ``--clients`` concurrent clients (requests per second, and the ratio to one client's rate in the
same run). Each request uploads an example image, runs the model, draws, and downloads the annotated PNG.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.common import REPO, table, write_json

EXAMPLES = sorted((REPO / "models" / "shapes" / "examples").glob("shapes_*.jpg"))
MODEL = "shapes (bundled maskrcnn_light)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(concurrency: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--no-coco", "--port", str(port), "--concurrency",
                             str(concurrency)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app did not start within 180 s")


def one_request(client, image, backend: str) -> float:
    from gradio_client import handle_file

    t = time.perf_counter()
    client.predict(handle_file(str(image)), MODEL, backend, 0.5, True, True, True, api_name="/predict")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", nargs="+", default=["pytorch", "torchscript", "onnxruntime"])
    p.add_argument("--requests", type=int, default=20, help="sequential requests per backend")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--per-client", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=1, help="the app's --concurrency")
    args = p.parse_args()
    from gradio_client import Client

    proc, url = start_app(args.concurrency)
    rows = []
    try:
        clients = [Client(url, verbose=False, analytics_enabled=False) for _ in range(args.clients)]
        for backend in args.backends:
            for image in EXAMPLES[:2]:
                one_request(clients[0], image, backend)  # warm-up: load the predictor, first-call costs
            lat = [one_request(clients[0], EXAMPLES[i % len(EXAMPLES)], backend) for i in range(args.requests)]

            def work(k: int, backend=backend) -> list[float]:
                return [one_request(clients[k], EXAMPLES[(k + i) % len(EXAMPLES)], backend)
                        for i in range(args.per_client)]

            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                concurrent = [x for xs in pool.map(work, range(args.clients)) for x in xs]
            wall = time.perf_counter() - t
            single_rate = 1.0 / statistics.mean(lat)
            rate = len(concurrent) / wall
            rows.append({"backend": backend, "median_s": statistics.median(lat),
                         "p95_s": float(np.percentile(lat, 95)), "one_client_req_s": single_rate,
                         f"{args.clients}_clients_req_s": rate, "throughput_ratio": rate / single_rate,
                         f"{args.clients}_clients_p95_s": float(np.percentile(concurrent, 95)),
                         "requests": len(lat) + len(concurrent)})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cols = ["backend", "median_s", "p95_s", "one_client_req_s", f"{args.clients}_clients_req_s", "throughput_ratio",
            f"{args.clients}_clients_p95_s", "requests"]
    print(table(rows, cols))
    print(f"wrote {write_json('app_latency', {'rows': rows, 'app_concurrency': args.concurrency, 'url': url})}")


if __name__ == "__main__":
    main()
