"""The operator console (``/console``): in a real headless browser (Debian's chromium and
chromedriver, driven by Selenium) against a real service on the stub judge, an operator signs
in, filters the queue, labels three cases, previews the gate and publishes; the bank has a new
version with those examples and the next score of the same text uses it. Suggestions carrying
script, HTML and template payloads show literally and run nothing. Refusals (wrong token,
expired session, a form from elsewhere) are the contract's errors."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests._helpers import ServerProcess, assert_envelope, item, score_body

TOKEN = "console-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = [
    "Which standing desks under $400 go up to 48 inches?",
    "Are there bamboo desks with two motors and memory presets?",
    "Do you sell L-shaped desks that fit a 60 inch corner?",
]
PAYLOADS = [
    "<script>alert('xss')</script> desks with drawers under $200?",
    "Desks with <img src=x onerror=alert(2)> cable trays under $300?",
    "Which desks fit {{7*7}} inches and ${7*7} monitors?",
]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: 'make setup' installs Debian's packages")
        pytest.skip("chromium not installed (make setup installs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)  # an element of the next page is waited for, not raced
    try:
        yield driver
    finally:
        driver.quit()


def _queued(url: str, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        items = httpx.get(url + "/v1/review", params={"limit": 50}, headers=AUTH).json()["items"]
        if len(items) >= want or time.monotonic() > deadline:
            return list(items)
        time.sleep(0.1)


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.accept()


def test_an_operator_labels_and_publishes_in_a_real_browser(
    browser: Any, running_service: Callable[..., ServerProcess]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    service = running_service(
        EQS_REWARD_ADMIN_TOKEN=TOKEN,
        EQS_REWARD_REVIEW_UNIFORM_RATE="1",
        EQS_REWARD_REVIEW_REFUSAL_RATE="1",
    )
    body = score_body(item("standing desk", *GOOD), item("desk", *PAYLOADS), k=3)
    assert httpx.post(service.url + "/v1/score", json=body).status_code == 200
    assert len(_queued(service.url, 6)) == 6

    browser.get(service.url + "/console")
    assert browser.current_url.endswith("/console/login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    browser.find_element(By.ID, "filter")  # the queue
    assert browser.current_url.endswith("/console")
    # Attacker-controlled text shows literally and runs nothing.
    page = browser.find_element(By.TAG_NAME, "body").text
    for payload in PAYLOADS:
        assert payload in page, payload
    # No template evaluated them (a bare "49" also occurs in the queue's timestamps).
    assert "fit 49 inches" not in page and "and 49 monitors" not in page
    assert browser.find_elements(By.CSS_SELECTOR, "td.suggestion *") == []
    _no_alert(browser)

    Select(browser.find_element(By.ID, "reason")).select_by_value("uniform")
    browser.find_element(By.ID, "filter").click()
    WebDriverWait(browser, 10).until(lambda d: "reason=uniform" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.cases tbody tr")
    links = {
        row.find_element(By.CSS_SELECTOR, "td.suggestion").text: row.find_element(
            By.CSS_SELECTOR, "a.case-link"
        ).get_attribute("href")
        for row in rows
    }
    assert set(GOOD) <= set(links)
    for text in GOOD:
        browser.get(links[text])
        assert browser.find_element(By.ID, "suggestion").text == text
        for choice in ("answerability-1", "factuality-0", "information_gain-1"):
            browser.find_element(By.ID, choice).click()
        browser.find_element(By.ID, "rationale").send_keys("no desk has that spec")
        browser.find_element(By.ID, "save-labels").click()
        assert browser.find_element(By.ID, "labeled").text.startswith("Labeled")

    browser.get(service.url + "/console/publish")
    browser.find_element(By.ID, "preview").click()
    assert "the candidate is" in browser.find_element(By.ID, "verdict").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gate tbody tr")) == 3
    browser.find_element(By.ID, "publish").click()
    added = browser.find_element(By.ID, "added").text  # the bank's page
    assert "/console/bank" in browser.current_url
    assert all(text in added for text in GOOD)
    _no_alert(browser)

    versions = httpx.get(service.url + "/v1/fewshot/versions").json()
    assert versions["active"] == 2
    examples = httpx.get(service.url + "/v1/fewshot").json()["examples"]
    published = [e for e in examples if e["suggestion"] in GOOD]
    assert len(published) == 3 and all(e["labels"]["factuality"] == 0 for e in published)
    again = httpx.post(service.url + "/v1/score", json=score_body(item("standing desk", GOOD[0])))
    assert again.json()["meta"]["fewshot_version"] == 2
    assert again.json()["results"][0]["suggestions"][0]["cached"] is False


def test_refusals_are_the_contracts_errors(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_token=TOKEN, console_session_s=1)
    client.follow_redirects = False
    assert_envelope(client.post("/console/login", data={"token": "wrong"}), 403, "forbidden")
    assert_envelope(client.post("/console/login", data={}), 401, "unauthorized")
    signed_in = client.post("/console/login", data={"token": TOKEN})
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = client.get("/console")
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]  # no script at all
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # A form posted from elsewhere carries the cookie (were it sent) but not the session's token.
    assert_envelope(client.post("/console/publish", data={"action": "publish"}), 403, "forbidden")
    session = client.cookies["eqs_console"]
    time.sleep(2.1)  # the browser drops the cookie at its max-age; the server refuses it too
    stale = client.get("/console", headers={"cookie": f"eqs_console={session}"})
    assert "expired" in assert_envelope(stale, 401, "unauthorized")
    forged = client.get("/console", headers={"cookie": "eqs_console=" + session[:-4] + "abcd"})
    assert_envelope(forged, 401, "unauthorized")
    client.cookies.clear()
    assert_envelope(client.post("/console/publish", data={}), 401, "unauthorized")
    assert client.get("/console").headers["location"] == "/console/login"


def test_without_an_admin_token_nobody_signs_in(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    refused = client.post("/console/login", data={"token": ""})
    assert "EQS_REWARD_ADMIN_TOKEN" in assert_envelope(refused, 403, "forbidden")
