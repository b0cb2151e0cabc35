"""Benchmark: end-to-end request latency and throughput of the app (gradio_client), and the live page's redraw
latency and webcam frame rate (a real browser), per backend.

    python -m bench.app_latency --requests 20 --clients 4 --per-client 10 --webcam-seconds 20

Starts ``python app.py`` (the real entry point, bundled model, no COCO model) in its own process, then per
backend: sequential requests from one client (median and p95 after two warm-up calls), and the same work
spread over ``--clients`` concurrent clients (requests per second, and the ratio to one client's rate in the
same run). Each request uploads an example image, runs the model, draws, and downloads the annotated PNG.

Live (``--webcam-seconds`` > 0; needs Debian's chromium): in a headless chromium on the same app, per backend,
upload a 640x480 image and time it until the drawn result has loaded in the page (the model ran), then move the
threshold slider between 0 and 1 ``--redraws`` times and time each redraw until the new drawing has loaded (no
model run); then stream a fake camera (a 640x480 clip) for ``--webcam-seconds`` and count the annotated frames the
page loads.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

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


WATCH = """(elem) => {
  window.__loads = window.__loads || {};
  window.__loads[elem] = [];
  const box = document.querySelector('#' + elem);
  const hook = (img) => { if (!img.__watched) { img.__watched = true;
    img.addEventListener('load', () => window.__loads[elem].push([performance.now(), img.getAttribute('src')])); } };
  box.querySelectorAll('img').forEach(hook);
  new MutationObserver(() => box.querySelectorAll('img').forEach(hook))
    .observe(box, {subtree: true, childList: true});
}"""


def _loaded_after(page, elem: str, since_ms: float, timeout_s: float = 60.0) -> float:
    """Milliseconds (page clock) at which #elem's image next finished loading after ``since_ms``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        hit = page.evaluate(f"(t) => (window.__loads['{elem}'] || []).find(e => e[0] > t)", since_ms)
        if hit:
            return hit[0]
        time.sleep(0.005)
    raise RuntimeError(f"#{elem} showed no new image in {timeout_s} s")


def _now(page) -> float:
    return page.evaluate("() => performance.now()")


def live_figures(url: str, backends: list[str], redraws: int, webcam_s: float, work) -> list[dict]:
    import shutil

    from playwright.sync_api import sync_playwright

    from tests.fakecam import write_y4m

    images = []
    for i in range(2):
        images.append(work / f"photo{i}_640x480.png")
        Image.open(EXAMPLES[i]).convert("RGB").resize((640, 480)).save(images[-1])
    clip = write_y4m(work / "clip.y4m", EXAMPLES)
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}"])
        for backend in backends:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="load")
            page.locator("#upload").wait_for(timeout=60_000)
            page.locator(f"input[type=radio][value='{backend}']").check()
            page.evaluate(WATCH, "detections")
            first = []
            for image in images:  # the first upload also loads the predictor: time the second
                t = _now(page)
                page.locator("#upload input[type=file]").set_input_files(str(image))
                first.append((_loaded_after(page, "detections", t) - t) / 1000)
                page.locator("#summary").get_by_text(re.compile(r"in \d+ ms")).first.wait_for(timeout=10_000)
            model_ms = float(re.search(r"in (\d+) ms", page.locator("#summary").inner_text())[1])
            slider = page.locator("input[type=range]").first
            lat, server = [], []
            for i in range(redraws):
                slider.focus()
                t = _now(page)
                page.keyboard.press("Home" if i % 2 == 0 else "End")  # threshold 0 / 1: the drawing changes
                lat.append((_loaded_after(page, "detections", t) - t) / 1000)
                page.locator("#summary").get_by_text("without running the model").wait_for(timeout=10_000)
                server.append(float(re.search(r"redrawn in (\d+) ms", page.locator("#summary").inner_text())[1]))
                time.sleep(0.2)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#camera-detections").wait_for(timeout=10_000)
            page.evaluate(WATCH, "camera-detections")
            page.get_by_text("Click to Access Webcam").click()
            page.locator("#camera").get_by_text("Record").click()
            _loaded_after(page, "camera-detections", _now(page))  # the first frame (the predictor is warm)
            t = _now(page)
            time.sleep(webcam_s)
            end = _now(page)
            frames = page.evaluate("([t, e]) => window.__loads['camera-detections'].filter(x => x[0] > t && "
                                   "x[0] <= e).length", [t, end])
            fps = frames / ((end - t) / 1000)
            meter = page.locator("#fps").inner_text()
            page.locator("#camera").get_by_text("Stop").click()
            page.close()
            rows.append({"backend": backend, "upload_to_shown_s": first[-1], "server_model_run_ms": model_ms,
                         "redraw_shown_median_s": statistics.median(lat), "redraw_server_median_ms":
                         statistics.median(server), "webcam_fps_browser": fps, "webcam_meter": meter})
        browser.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", nargs="+", default=["pytorch", "torchscript", "onnxruntime"])
    p.add_argument("--requests", type=int, default=20, help="sequential requests per backend")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--per-client", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=1, help="the app's --concurrency")
    p.add_argument("--redraws", type=int, default=10, help="threshold moves timed per backend (live part)")
    p.add_argument("--webcam-seconds", type=float, default=20.0, help="webcam streaming per backend; 0: no live part")
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
        live = []
        if args.webcam_seconds > 0:
            with tempfile.TemporaryDirectory() as work:
                live = live_figures(url, args.backends, args.redraws, args.webcam_seconds, Path(work))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cols = ["backend", "median_s", "p95_s", "one_client_req_s", f"{args.clients}_clients_req_s", "throughput_ratio",
            f"{args.clients}_clients_p95_s", "requests"]
    print(table(rows, cols))
    if live:
        print(table(live, list(live[0])))
    payload = {"rows": rows, "live": live, "app_concurrency": args.concurrency, "url": url}
    print(f"wrote {write_json('app_latency', payload)}")


if __name__ == "__main__":
    main()
