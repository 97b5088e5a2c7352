"""The picker page and the dashboard in a real headless Chromium, against a
real `bentoml serve` (rules only, fake upstream, API keys) whose log already
holds two days of synthetic history in two A/B arms: pick -> answer ->
override -> feedback logged -> dashboard shows it. Screenshots are saved to
artifacts/screenshots/."""
from __future__ import annotations

import sqlite3

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from log_history import write_history
from serving_support import ADMIN_KEY, KEYS, serving_overrides, start_server

USER = "u-browser"
PROMPT = "Fix this bug: ```python\ndef mean(xs):\n    return sum(xs) / len(xs) + 1\n```"


def wait(driver, timeout=30):
    return WebDriverWait(driver, timeout)


def ask(driver, text: str) -> None:
    """Type a message as a user does (Shift+Enter between lines) and send it with Enter."""
    box = driver.find_element(By.ID, "prompt")
    for i, line in enumerate(text.split("\n")):
        if i:
            box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys(line)
    box.send_keys(Keys.ENTER)


def text_of(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


@pytest.fixture(scope="module")
def history_server(tmp_path_factory, fake_upstream):
    tmp = tmp_path_factory.mktemp("ui")
    truth = write_history(tmp / "log.sqlite", hours=48, n=400)
    server = start_server(tmp, serving_overrides(tmp, fake_upstream.url))
    server.truth = truth
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(browser, history_server):
    served = history_server
    browser.set_window_size(1280, 900)
    browser.get(served.url + "/ui")
    wait(browser).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) > 3)
    return browser


def test_pick_answer_override_feedback_dashboard(page, history_server, fake_upstream, screenshots):
    d, served = page, history_server
    picker = Select(d.find_element(By.ID, "model"))
    names = [o.text for o in picker.options]
    assert names[0] == "Auto (recommended)" and "Claude Opus 4.5" in names and "GPT-4o" in names
    assert picker.first_selected_option.text == "Auto (recommended)"

    # settings: who I am and my org's key
    d.find_element(By.CSS_SELECTOR, "#settings summary").click()
    user = d.find_element(By.ID, "user")
    user.clear()
    user.send_keys(USER, Keys.TAB)
    d.find_element(By.ID, "apikey").send_keys(KEYS["acme"], Keys.TAB)
    d.find_element(By.CSS_SELECTOR, "#settings summary").click()

    # ask with Auto: the answer says which model and why
    ask(d, PROMPT)
    wait(d).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.bot .model-label")))
    label = text_of(d, ".msg.bot .model-label")
    assert label == "Claude Sonnet 4 - auto-selected for debugging", label
    assert "code with a request to fix it" in text_of(d, ".msg.bot .reason")
    assert text_of(d, ".msg.bot .answer") == "hello from claude-sonnet-4-20250514"
    d.save_screenshot(str(screenshots / "ui-1-answer.png"))

    # alternatives on hover
    switch = d.find_element(By.CSS_SELECTOR, ".msg.bot .switch")
    ActionChains(d).move_to_element(switch).perform()
    alts = wait(d).until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".msg.bot .alts")))
    options = [b.get_attribute("data-model") for b in alts.find_elements(By.CSS_SELECTOR, "button.alt")]
    assert "claude-opus-4.5" in options and "claude-sonnet-4" not in options
    d.save_screenshot(str(screenshots / "ui-2-alternatives.png"))

    # one click: regenerate with Claude Opus 4.5 and send the override
    fake_upstream.calls.clear()
    alts.find_element(By.CSS_SELECTOR, "button.alt[data-model='claude-opus-4.5']").click()
    wait(d).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".msg.bot .note"), "switched to"))
    assert text_of(d, ".msg.bot .model-label") == "Claude Opus 4.5 - your choice"
    assert text_of(d, ".msg.bot .answer") == "hello from claude-opus-4-5"
    assert "Feedback saved: switched to Claude Opus 4.5" in text_of(d, ".msg.bot .note")
    assert ("claude-opus-4-5", False) in fake_upstream.calls
    d.find_element(By.CSS_SELECTOR, ".msg.bot .regenerate").click()                # again, same model
    wait(d).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".msg.bot .note"), "regenerated with"))
    assert "regenerated with Claude Opus 4.5" in text_of(d, ".msg.bot .note")
    d.find_element(By.CSS_SELECTOR, ".msg.bot .stars button[data-rating='4']").click()
    wait(d).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".msg.bot .note"), "4/5"))
    assert "4/5 for Claude Opus 4.5" in text_of(d, ".msg.bot .note")
    d.save_screenshot(str(screenshots / "ui-3-override.png"))

    # the log holds both events, credited to the model the user switched to
    rows = sqlite3.connect(served.db).execute(
        "SELECT f.event, f.routed_model, f.chosen_model, f.rating, f.user_id, f.org_id, d.requested "
        "FROM feedback f JOIN decisions d USING (decision_id) WHERE f.user_id = ? ORDER BY f.id", (USER,)).fetchall()
    assert rows == [("override", "claude-sonnet-4", "claude-opus-4.5", None, USER, "acme", "auto"),
                    ("regenerate", "claude-sonnet-4", "claude-opus-4.5", None, USER, "acme", "auto"),
                    ("rating", "claude-sonnet-4", "claude-opus-4.5", 4.0, USER, "acme", "auto")], rows
    picked = sqlite3.connect(served.db).execute(
        "SELECT COUNT(*) FROM decisions WHERE user_id = ? AND requested = 'claude-opus-4.5'", (USER,)).fetchone()[0]
    assert picked == 2                                  # the override's answer and its regeneration

    # the routed model's provider fails: the answer says which model stood in
    fake_upstream.modes["claude-sonnet-4-20250514"] = "500"
    ask(d, "Fix this bug: ```python\nprint(1/0)\n```")
    wait(d).until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, ".msg.bot .model-label")) == 2)
    fake_upstream.modes.clear()
    fell = d.find_elements(By.CSS_SELECTOR, ".msg.bot")[1]
    label = fell.find_element(By.CSS_SELECTOR, ".model-label").text
    assert label.endswith("- auto-selected (Claude Sonnet 4 was unavailable)") and "Sonnet" not in label[:20], label
    assert "failed" in fell.find_element(By.CSS_SELECTOR, ".reason").text

    # pick a model in the picker: the answer says it is the user's choice
    Select(d.find_element(By.ID, "model")).select_by_visible_text("GPT-4o")
    d.find_element(By.ID, "prompt").send_keys("Tell me a fun fact about octopuses", Keys.ENTER)
    wait(d).until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, ".msg.bot .model-label")) == 3)
    second = d.find_elements(By.CSS_SELECTOR, ".msg.bot")[2]
    assert second.find_element(By.CSS_SELECTOR, ".model-label").text == "GPT-4o - your choice"
    assert second.find_element(By.CSS_SELECTOR, ".answer").text == "hello from gpt-4o"
    d.save_screenshot(str(screenshots / "ui-4-picked.png"))
    assert sqlite3.connect(served.db).execute(
        "SELECT COUNT(*) FROM decisions WHERE user_id = ? AND requested = 'gpt-4o'", (USER,)).fetchone()[0] == 1

    # the dashboard asks for the admin key, then shows the override
    d.set_window_size(1280, 2200)
    d.get(served.url + "/dashboard")
    wait(d).until(EC.visibility_of_element_located((By.ID, "keybox")))
    assert "admin" in text_of(d, "#keymsg")
    d.find_element(By.ID, "key").send_keys(ADMIN_KEY, Keys.ENTER)
    wait(d).until(EC.visibility_of_element_located((By.ID, "dash")))
    wait(d).until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#c-pairs svg"))
    pairs = d.find_element(By.ID, "c-pairs").text
    assert "Claude Sonnet 4 → Claude Opus 4.5" in pairs, pairs
    assert "Claude Opus 4.5" in d.find_element(By.ID, "c-ratings").text
    assert text_of(d, "#k-decisions .v") == str(served.truth["auto"] + 2)     # the history and two Auto answers
    assert text_of(d, "#k-override .v").endswith("%") and text_of(d, "#k-override .v") != "0%"
    for chart in ("c-model", "c-task", "c-tier", "c-override", "c-spend", "c-latency"):
        assert d.find_elements(By.CSS_SELECTOR, f"#{chart} svg .mark"), f"{chart} drew nothing"
    arms = d.find_element(By.ID, "arms").text
    assert "2 arms" in text_of(d, "#arms-sub") and "champion" in arms and "challenger-a" in arms
    d.save_screenshot(str(screenshots / "dashboard.png"))
