"""Screenshots of report.html and of the live page for the README (headless Chromium driven by selenium).
Run by docs/make_pictures.sh after it has trained /tmp/docs/run and written /tmp/docs/report.html."""

import io
import json
import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from volnet.report import LiveView, open_server

RUN = Path("/tmp/docs/run")


def errors(d: webdriver.Chrome) -> list:
    return [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def main() -> None:
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    d.set_window_size(1100, 1500)
    d.get((RUN.parent / "report.html").as_uri())
    time.sleep(1)
    print("report images", d.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"))
    print("report console errors", errors(d))
    d.set_window_size(1100, min(d.execute_script("return document.body.scrollHeight") + 50, 4000))
    time.sleep(0.5)
    d.save_screenshot("docs/report.png")

    live_run = RUN.parent / "live"  # a copy without results.json: a run still training
    shutil.rmtree(live_run, ignore_errors=True)
    shutil.copytree(RUN, live_run)
    (live_run / "results.json").unlink()
    spec = json.loads((RUN / "best" / "model.json").read_text())["spec"]
    live = LiveView(open_server(lambda: live_run, port=0, spec=spec), stream=io.StringIO())
    live.on_train_begin(None)
    d.set_window_size(1100, 900)
    d.get(live.server.url)
    time.sleep(2)
    print("live console errors", errors(d))
    d.save_screenshot("docs/live.png")
    live.close()
    d.quit()


if __name__ == "__main__":
    main()
