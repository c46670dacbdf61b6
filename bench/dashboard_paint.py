"""The dashboard's first paint in a real browser, for `obb-bench dashboard --ui-python`.

    python bench/dashboard_paint.py BASE_URL ADMIN_KEY JOB_ID

Opens each view of the page at BASE_URL/ui in Debian's headless Chromium (driven by
Playwright, with the key already in the tab's sessionStorage, as after a login) and prints
one JSON object: for each view, the milliseconds from navigation to the view's content
shown (its table or its facts, not "Loading…"), the median of 5 fresh loads."""
from __future__ import annotations

import json
import statistics
import sys
import time

from playwright.sync_api import sync_playwright

# What each view shows once its calls have answered.
VIEWS = {
    "overview": "#overview-body .cards",
    "jobs": "#jobs-list table",
    "job": "#job-body [data-fact]",
    "batches": "#batches-list table, #batches-list .empty",
    "nodes": "#nodes-list table",
    "keys": "#keys-list table",
}
LOADS = 5


def main() -> None:
    base, key, job = sys.argv[1], sys.argv[2], sys.argv[3]
    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        for view, ready in VIEWS.items():
            route = f"jobs/{job}" if view == "job" else view
            times = []
            for _ in range(LOADS):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_init_script(f"sessionStorage.setItem({json.dumps(STORAGE)}, {json.dumps(key)})")
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{base}/ui#/{route}")
                page.locator(ready).first.wait_for(state="visible", timeout=30_000)
                times.append((time.perf_counter() - started) * 1000)
                context.close()
            results[view] = round(statistics.median(times), 1)
        browser.close()
    print(json.dumps(results))


STORAGE = "obb.key"

if __name__ == "__main__":
    main()
