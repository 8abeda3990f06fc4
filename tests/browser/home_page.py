"""The home page in headless Chromium, through Selenium and chromedriver.

Run by tests/api/home_page.rs against a running homingd that has an
account `--alias` with `--account-key`. Checks what a person sees in a real
DOM (with and without JavaScript), that the page loads nothing from
elsewhere and breaks no rule of its Content-Security-Policy, that it fits a
phone's width, and that the look-up shows the fingerprint `homing whois`
prints. Saves screenshots at phone and desktop widths. Prints one line per
check; exits non-zero at the first failure.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

PHONE = (390, 844)
DESKTOP = (1280, 900)


def check(condition, what):
    if not condition:
        print(f"FAIL  {what}", flush=True)
        sys.exit(1)
    print(f"ok    {what}", flush=True)


def fingerprint(key):
    """As `homing whois` prints it: SHA-256 of the key's text, 10 bytes."""
    digest = hashlib.sha256(key.encode()).digest()[:10].hex()
    return " ".join(digest[i:i + 4] for i in range(0, 20, 4))


def browser(args, javascript=True):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--disable-default-apps",
                 "--force-color-profile=srgb", "--lang=en-US"):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(args.chromedriver))
    driver.set_page_load_timeout(30)
    return driver


def viewport(driver, size, mobile):
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
    })


def requested_urls(driver):
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def visible(driver, selector, timeout=10):
    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def look_up(driver, text, state):
    field = driver.find_element(By.ID, "lookup-alias")
    field.clear()
    field.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#lookup-form button[type=submit]").click()
    return visible(driver, f'#lookup-result [data-state="{state}"]')


def save(driver, path, full):
    """The viewport, or (full) the whole page at the viewport's width."""
    if not full:
        driver.save_screenshot(path)
        return
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    })
    with open(path, "wb") as out:
        out.write(base64.b64decode(shot["data"]))


def with_javascript(args):
    server = args.server_name
    driver = browser(args)
    try:
        viewport(driver, DESKTOP, mobile=False)
        driver.get(args.url + "/")
        visible(driver, "button.copy")
        body = driver.find_element(By.TAG_NAME, "body").text

        check(server in driver.title, f"the title names the server ({driver.title!r})")
        check(driver.find_element(By.TAG_NAME, "h1").text == server, "the heading is the server name")
        check(driver.find_element(By.ID, "description").text == args.description,
              "the admin's description shows as text, markup and all")
        check(driver.execute_script("return document.scripts.length") == 1,
              "the description's <script> did not become an element")
        check(driver.execute_script("return window.owned === undefined"), "and did not run")
        described = driver.find_element(By.CSS_SELECTOR, 'meta[name="description"]')
        check(described.get_attribute("content") == args.description, "<meta> description")
        check(f"alias@{server}" in body, "the address shape")
        check("Registration is open." in body, "the registration policy in words")
        check("Mail no device fetches is deleted after 30 days." in body, "retention in words")
        check("A message can be up to 256 KiB." in body, "the message limit")
        check("any Homing server" in body, "the federation policy")
        check(driver.find_element(By.ID, "init-command").text == f"homing init you@{server}",
              "the init command")
        version = driver.find_element(By.ID, "version").text
        check(version and version[0].isdigit(), f"the software version ({version})")
        contact = driver.find_element(By.ID, "contact")
        check(contact.get_attribute("href") == "mailto:admin@example.org", "the contact link")
        check(driver.find_element(By.ID, "rules").get_attribute("href") == "https://example.org/rules",
              "the rules link")

        # Accessibility basics: one main landmark, a banner, a label for
        # every field, the page language.
        check(driver.execute_script(
            "return document.querySelectorAll('main').length === 1 &&"
            " document.querySelector('body > header') !== null &&"
            " document.querySelector('body > footer') !== null"), "landmarks")
        check(driver.execute_script(
            "return Array.from(document.querySelectorAll('input')).every("
            " i => document.querySelector('label[for=\"' + i.id + '\"]'))"), "every field has a label")
        check(driver.execute_script("return document.documentElement.lang") == "en", "the page language")

        # The copy button copies the command.
        origin = args.url
        driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        driver.find_element(By.CSS_SELECTOR, "button.copy").click()
        visible(driver, "#copy-done")
        copied = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, e => done('error: ' + e));")
        check(copied == f"homing init you@{server}", f"the copy button copies the command ({copied!r})")

        # The look-up: a registered account shows the fingerprint `homing
        # whois` prints; an unknown one says so; other inputs are explained.
        found = look_up(driver, args.alias, "found")
        shown = found.find_element(By.CSS_SELECTOR, '[data-slot="fingerprint"]').text
        check(shown == fingerprint(args.account_key),
              f"the look-up shows the account key fingerprint ({shown})")
        check(f"{args.alias}@{server}" in found.text, "for the full address")
        found.find_element(By.TAG_NAME, "summary").click()
        key = found.find_element(By.CSS_SELECTOR, '[data-slot="key"]').text
        check(key.replace(" ", "") == args.account_key, "and the full key, grouped")
        save(driver, os.path.join(args.screenshots, "desktop-full.png"), full=True)
        driver.execute_script("window.scrollTo(0, 0)")
        save(driver, os.path.join(args.screenshots, "desktop.png"), full=False)

        unknown = look_up(driver, "nobody-here", "unknown")
        check(f"There is no account nobody-here@{server} on this server." in unknown.text,
              "an unknown alias gets a clear not-found message")
        check(not found.is_displayed(), "and the earlier result is gone")
        look_up(driver, f"{args.alias.upper()}@{server}", "found")
        check(True, "a full address on this server is looked up too")
        elsewhere = look_up(driver, "bob@other.example", "elsewhere")
        check("other.example" in elsewhere.text, "an address on another server is pointed there")
        look_up(driver, "-dash-", "invalid")
        check(True, "a malformed alias is explained without a request")

        # Nothing came from elsewhere, and the policy was never broken.
        urls = requested_urls(driver)
        outside = [u for u in urls if not (u.startswith(args.url + "/") or u.startswith("data:"))]
        check(len(urls) > 0 and not outside, f"{len(urls)} requests, none elsewhere {outside}")
        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" and "nobody-here" not in e["message"]]
        check(not problems, f"no console errors or policy violations {problems}")

        # A phone: nothing wider than the screen, the same content.
        viewport(driver, PHONE, mobile=True)
        driver.get(args.url + "/")
        visible(driver, "button.copy")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        check(width <= PHONE[0], f"no sideways scrolling on a phone ({width}px)")
        save(driver, os.path.join(args.screenshots, "phone.png"), full=False)
        look_up(driver, args.alias, "found")
        save(driver, os.path.join(args.screenshots, "phone-full.png"), full=True)
    finally:
        driver.quit()


def without_javascript(args):
    driver = browser(args, javascript=False)
    try:
        viewport(driver, DESKTOP, mobile=False)
        driver.get(args.url + "/")
        body = driver.find_element(By.TAG_NAME, "body").text
        check("Registration is open." in body, "without JavaScript the page reads the same")
        check(driver.find_element(By.ID, "init-command").is_displayed(), "the command is there to select")
        check(not driver.find_element(By.CSS_SELECTOR, "button.copy").is_displayed(),
              "a copy button that cannot work is not shown")
        check("Looking up needs JavaScript" in body, "the look-up says what it needs")
    finally:
        driver.quit()


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "server-name", "alias", "account-key", "description",
                 "screenshots", "chromium", "chromedriver"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    started = time.monotonic()
    with_javascript(args)
    without_javascript(args)
    print(f"screenshots in {args.screenshots} ({time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
