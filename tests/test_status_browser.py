"""The status page in a real browser: Debian's chromium, headless, driven by Playwright,
against `facturd serve` with mail sent over SMTP (the operator made with the CLI).

What only a browser shows: the login form posts and the SameSite=Strict session cookie is
sent back, the page's styles pass its own Content-Security-Policy (no console violation),
the Retry and Log out buttons work with their form nonces, the original file downloads.
.ci/setup installs chromium; without it this test fails (it is not skipped) and says so.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.conftest import Facturd, wait_for
from tests.factories import make_facturx_pdf
from tests.mails import depth_bomb, invoice_mail
from tests.test_worker import TO, send

NAME, PASSWORD = "alice", "correct horse battery staple"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed for this test: run .ci/setup (apt chromium)"
    return path


def jobs(f: Facturd) -> list[dict[str, Any]]:
    return list(json.loads(f.cli("messages", "list", "--json").stdout))


def test_operator_uses_the_status_page_in_chromium(facturd: Facturd, tmp_path: Path) -> None:
    f = facturd
    f.add_folder()  # manual mode: the invoice waits for approval
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    f.cli("operator", "add", NAME, "--password-file", str(secret))
    f.start()
    pdf = make_facturx_pdf(number="F-WAIT-1")
    send(f, invoice_mail(to=TO, attachments=[("F-WAIT-1.pdf", "application/pdf", pdf)]))
    send(f, depth_bomb(to=TO))
    wait_for(lambda: sorted(j["state"] for j in jobs(f)) == ["done", "quarantined"],
             "one invoice processed, one mail quarantined")
    base = f"http://127.0.0.1:{f.web_port}"
    console: list[str] = []
    with sync_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=chromium(), args=args)
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            response = page.goto(f"{base}/status")
            assert response is not None and response.status == 401
            page.fill("#name", NAME)
            page.fill("#password", "not the right one at all")
            page.click("button[type=submit]")
            assert "Wrong name or password" in page.inner_text("#error")
            page.fill("#name", NAME)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#quarantine")
            assert "too-deep" in page.inner_text("#quarantine")
            assert "F-WAIT-1" in page.inner_text("#waiting")
            # The nonce'd <style> applied: CSP let our own styles through.
            assert page.evaluate(
                "getComputedStyle(document.querySelector('main')).maxWidth") == "1100px"
            page.screenshot(path=str(tmp_path / "status.png"), full_page=True)

            page.click("#quarantine button")  # Retry: back in the queue, by whom
            page.wait_for_selector("#events")
            events = page.inner_text("#events")
            assert "requeued" in events and f"operator:{NAME}" in events, events

            page.click("#waiting a")
            assert "F-WAIT-1" in page.inner_text("main")
            with page.expect_download() as download:
                page.click("#original")
            saved = tmp_path / "original.pdf"
            download.value.save_as(saved)
            assert saved.read_bytes() == pdf

            page.click("button:has-text('Log out')")
            page.wait_for_selector("#password")
            response = page.goto(f"{base}/status")
            assert response is not None and response.status == 401
        finally:
            browser.close()
    # The login page is a 401 by design (B-WEB-02): the browser reports those loads; any
    # other error, a CSP violation above all, is a defect.
    violations = [c for c in console if "Content Security Policy" in c or (
        c.startswith("error") and "status of 401" not in c)]
    assert not violations, violations

