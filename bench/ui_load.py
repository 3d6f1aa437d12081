"""Web UI and HTTP API load times with many tasks in the store.

Starts etcd and one master, submits N one-off tasks due tomorrow (they stay PENDING and cost
the scheduler nothing), then loads each UI page in headless Chromium (Selenium, Debian's
chromium and chromium-driver) until its content is on the page, and times the API calls
behind them with plain HTTP. Prints median and spread (min–max) of several loads.

    python bench/ui_load.py [--tasks 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table  # noqa: E402

from corral import procs  # noqa: E402
from corral.client import Client  # noqa: E402
from corral.v1 import api_pb2  # noqa: E402
from corral.v1 import types_pb2 as pb  # noqa: E402


def fill(addr: str, token: str, n: int) -> float:
    c = Client(addr, token, timeout=600)
    tomorrow = int(time.time()) + 86400
    t0 = time.monotonic()
    done = 0
    while done < n:
        k = min(10_000, n - done)
        reqs = [api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script="true", name=f"load-{done + i}"),
                                          run_at={"seconds": tomorrow}) for i in range(k)]
        resp = c.submit_many(reqs)  # type: ignore[attr-defined]
        bad = [r for r in resp.results if r.code]
        if bad:
            raise SystemExit(f"ui_load: {len(bad)} submissions refused, e.g. {bad[0]}")
        done += k
        print(f"  {done:,} tasks stored", file=sys.stderr)
    c.close()
    return time.monotonic() - t0


def api_times(base: str, token: str, paths: list[str], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            req = urllib.request.Request(base + p, headers={"Authorization": f"Bearer {token}"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            out[p].append(time.perf_counter() - t0)
    return out


def page_times(base: str, token: str, pages: list[tuple[str, str, str]], rounds: int, tmp: Path) -> dict[str, list[float]]:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--user-data-dir={tmp / 'chromium'}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts)
    out: dict[str, list[float]] = {name: [] for name, _, _ in pages}
    try:
        d.get(base + "/")
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        wait = WebDriverWait(d, 120, poll_frequency=0.01, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        wait.until(lambda _: d.find_elements(By.ID, "nodes"))
        for _ in range(rounds):
            for name, hash_, css in pages:
                d.get(base + "/#/nowhere")  # a page with nothing to load, so each load starts clean
                wait.until(lambda _: "No such page" in d.find_element(By.ID, "main").text)
                t0 = time.perf_counter()
                d.execute_script(f"location.hash = {json.dumps(hash_)}")
                wait.until(lambda _, c=css: d.find_elements(By.CSS_SELECTOR, c))
                out[name].append(time.perf_counter() - t0)
    finally:
        d.quit()
    return out


def fmt(xs: list[float]) -> tuple[str, str]:
    return f"{statistics.median(xs) * 1000:.0f} ms", f"{min(xs) * 1000:.0f}–{max(xs) * 1000:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-ui-"))
    token = secrets.token_urlsafe(16)
    started: list[procs.Proc] = []
    try:
        etcd = procs.start_etcd(tmp / "etcd", tmp / "logs")
        started.append(etcd)
        m = procs.start_master(etcd.info["endpoint"], token, tmp, name="master", extra=["--log-level", "warning"])
        started.append(m)
        base = f"http://{m.info['http']}"
        print(f"corral bench ui_load: {args.tasks:,} tasks, {args.rounds} loads of each page", file=sys.stderr)
        took = fill(m.info["address"], token, args.tasks)
        some = json.loads(urllib.request.urlopen(urllib.request.Request(base + "/v1/tasks?page_size=1",
                          headers={"Authorization": f"Bearer {token}"}), timeout=60).read())["tasks"][0]["task_id"]
        pages = [
            ("overview", "#/", "#task-counts tr"),
            ("tasks (newest 50)", "#/tasks", "#tasks tbody tr"),
            ("tasks filtered by state", "#/tasks?state=PENDING", "#tasks tbody tr"),
            ("one task", f"#/task/{some}", "#task-info dd"),
            ("templates", "#/templates", "#templates"),
            ("nodes", "#/nodes", "#nodes"),
        ]
        ui = page_times(base, token, pages, args.rounds, tmp)
        api = api_times(base, token, ["/v1/cluster", "/v1/tasks?page_size=50", "/v1/tasks?state=PENDING&page_size=50",
                                      f"/v1/tasks/{some}", "/v1/nodes"], args.rounds)
        rows = [[f"page: {name}", *fmt(ui[name])] for name, _, _ in pages]
        rows += [[f"GET {p}", *fmt(v)] for p, v in api.items()]
        print(f"\n{args.tasks:,} tasks stored in {took:.0f} s ({args.tasks / took:,.0f}/s)")
        print_table(["what (until its content is on the page)", "median", "spread"], rows)
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
