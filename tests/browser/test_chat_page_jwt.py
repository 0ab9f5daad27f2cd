"""The chat page in jwt mode: a pasted bearer token signs in, and the service's 401 and 403
texts are shown as they are, in a real browser against a real service and key-set server."""

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from messenger import jobs
from messenger.settings import Settings
from tests.browser.chrome import Browser, missing_tools
from tests.browser.test_chat_page import LIVE
from tests.conftest import base_settings, drop_database
from tests.processes import Service, serve, service_env

# AUTH_MODE lands on its own branch; until it has, there is no jwt mode to sign in to.
pytestmark = pytest.mark.skipif(
    "auth_mode" not in Settings.model_fields, reason="AUTH_MODE is not in this code yet"
)


@pytest.fixture(scope="module")
def keys() -> Iterator[Any]:
    """The key-set server of tests/key_server.py and the key that signs the tokens."""
    key_server = importlib.import_module("tests.key_server")
    key = key_server.SigningKey("ES256")
    server = key_server.KeySetServer(key)
    server.start()
    try:
        yield key_server, key, server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(keys: Any) -> Iterator[Service]:
    key_server, _, server = keys
    problem = missing_tools()
    if problem is not None:
        pytest.fail(problem)
    settings = base_settings(pgdatabase=f"messenger_test_{uuid.uuid4().hex[:12]}")
    jobs.run_migrate(settings)
    env = service_env(
        settings,
        WEB_APP="true",
        AUTH_MODE="jwt",
        AUTH_JWKS_URL=server.url,
        AUTH_ISSUER=key_server.ISSUER,
        AUTH_AUDIENCE=key_server.AUDIENCE,
    )
    subprocess.run(
        [sys.executable, "-m", "messenger", "seed"], env=env, check=True, capture_output=True
    )
    try:
        with serve(env) as running:
            yield running
    finally:
        import asyncio

        asyncio.run(drop_database(settings))


@pytest.fixture
def browser() -> Iterator[Browser]:
    started = Browser.start("token")
    try:
        yield started
    finally:
        started.quit()


def sign_in_with_token(browser: Browser, url: str, token: str, user_id: str = "") -> None:
    browser.driver.get(f"{url}/app/")
    browser.driver.find_element(By.CSS_SELECTOR, ".token summary").click()
    if user_id:
        browser.find("user-id").send_keys(user_id)
    browser.driver.find_element(By.ID, "token").send_keys(token)
    browser.find("sign-in").click()


def test_a_pasted_token_signs_in_and_the_401_and_403_texts_are_shown(
    service: Service, keys: Any, browser: Browser
) -> None:
    _, key, _ = keys
    expired = key.token(1, exp=1_000_000_000)
    refused = httpx.get(
        f"{service.url}/conversations", headers={"Authorization": f"Bearer {expired}"}
    )
    assert refused.status_code == 401
    sign_in_with_token(browser, service.url, expired)
    browser.wait("the 401's text", lambda: browser.notice() == refused.json()["error"])
    assert browser.state() == "signed-out"

    valid = key.token(1)
    mismatch = httpx.get(
        f"{service.url}/conversations",
        headers={"Authorization": f"Bearer {valid}", "User-Id": "2"},
    )
    assert mismatch.status_code == 403
    sign_in_with_token(browser, service.url, valid, user_id="2")
    browser.wait("the 403's text", lambda: browser.notice() == mismatch.json()["error"])

    # The user id comes from the token's sub claim; every request carries the token.
    sign_in_with_token(browser, service.url, valid)
    browser.wait(
        "the signed-in list",
        lambda: browser.driver.execute_script("return document.body.dataset.view") == "list",
    )
    assert browser.driver.find_element(By.ID, "token").get_attribute("value") == ""
    browser.driver.find_element(By.ID, "participant").send_keys("2", Keys.ENTER)
    browser.wait("the conversation open", lambda: browser.find("composer").is_displayed())
    browser.find("composer").send_keys("Signed in with a token.", Keys.ENTER)
    browser.wait("the message", lambda: browser.messages() == [(1, "Signed in with a token.")])
    if LIVE:
        browser.wait("the live stream, with the token", lambda: browser.state() == "live")

    statuses = [
        entry["message"] for entry in [*browser.console, *browser.driver.get_log("browser")]
    ]
    provoked = [message for message in statuses if "status of 401" in message or "403" in message]
    assert len(provoked) == 2, statuses
    others = [
        message
        for message in statuses
        if message not in provoked and (LIVE or "/events - " not in message)
    ]
    assert others == []
