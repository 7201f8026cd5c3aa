"""Screenshots of every console page, for the docs (run by hand, not by CI):

    python -m loadtest.console_screenshots [--out docs/operators/img]

Starts a service on the stub judge, scores a few suggestions (one carrying a script, to show it
rendered as text), signs in with Debian's chromium (headless, Selenium) and saves the queue, a
case, the gate preview and the bank's page as PNGs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from loadtest.bench import service, stub_judge

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "screenshot-token"
SUGGESTIONS = [
    "Which standing desks under $400 go up to 48 inches?",
    "Do you sell L-shaped desks that fit a 60 inch corner?",
    "Desks?",
    "<script>alert('policy text is shown, never run')</script> desks under $200?",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "operators" / "img"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    judge = stub_judge()
    env = {
        "EQS_REWARD_JUDGE_URL": judge.url + "/v1",
        "EQS_REWARD_JUDGE_MODEL": "stub",
        "EQS_REWARD_ADMIN_TOKEN": TOKEN,
        "EQS_REWARD_REVIEW_UNIFORM_RATE": "1",
        "EQS_REWARD_REVIEW_REFUSAL_RATE": "1",
    }
    svc = service(env)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"]
    flags += ["--disable-background-networking", f"--user-data-dir={tempfile.mkdtemp()}"]
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.implicitly_wait(10)
    try:
        body = {
            "items": [{"context": {"query": "standing desk"}, "suggestions": SUGGESTIONS}],
            "options": {"k": None, "score_mode": "soft"},
        }
        httpx.post(svc.url + "/v1/score", json=body, timeout=60).raise_for_status()
        time.sleep(1.0)  # the queue is written behind the answer
        driver.get(svc.url + "/console/login")
        driver.save_screenshot(str(out / "console-login.png"))
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "sign-in").click()
        driver.find_element(By.ID, "filter")
        driver.save_screenshot(str(out / "console-queue.png"))
        cases = driver.find_elements(By.CSS_SELECTOR, "a.case-link")
        for link in [a.get_attribute("href") for a in cases][:2]:
            driver.get(str(link))
            for choice in ("answerability-1", "factuality-1", "information_gain-0"):
                driver.find_element(By.ID, choice).click()
            driver.find_element(By.ID, "save-labels").click()
            driver.find_element(By.ID, "labeled")
        driver.save_screenshot(str(out / "console-case.png"))
        driver.get(svc.url + "/console/publish")
        driver.find_element(By.ID, "preview").click()
        driver.find_element(By.ID, "verdict")
        driver.save_screenshot(str(out / "console-publish.png"))
        driver.find_element(By.ID, "publish").click()
        driver.find_element(By.ID, "added")
        driver.save_screenshot(str(out / "console-bank.png"))
    finally:
        driver.quit()
        svc.stop()
        judge.stop()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
