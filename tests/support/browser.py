"""The sandbox page in a WebDriver, as a person uses it: elements found by their data-testid,
every step retried until the page shows it (the page re-renders as state arrives, so elements go
stale between finding and clicking)."""

from __future__ import annotations

from pathlib import Path

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait


class Page:
    def __init__(self, driver, shots: Path) -> None:
        self.d = driver
        self.shots = shots

    def wait(self, condition, timeout: float = 20):
        return WebDriverWait(self.d, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(condition)

    def shot(self, name: str, *, showing: str | None = None) -> None:
        """A screenshot; `showing`: with the newest message showing that text in view."""
        if showing is not None:
            self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                  self.card(showing))
        assert self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def by_testid(self, testid: str, root=None) -> WebElement:
        return (root or self.d).find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def all(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def become(self, user_id: str) -> None:
        Select(self.d.find_element(By.ID, "user-switch")).select_by_value(user_id)
        self.wait(lambda _: self.d.find_element(By.ID, "user-switch")
                  .get_attribute("value") == user_id)

    def click(self, testid: str) -> None:
        self.wait(lambda _: self.by_testid(testid).click() or True)

    def open_sidebar(self, testid: str) -> None:
        self.click(testid)
        self.wait(lambda _: "active" in self.by_testid(testid).get_attribute("class"))

    def command(self, text: str) -> None:
        box = self.by_testid("composer")
        box.clear()
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        self.wait(lambda _: self.by_testid("composer").get_attribute("value") == "")

    def displayed(self, element_id: str) -> bool:
        return self.d.find_element(By.ID, element_id).is_displayed()

    def ephemeral_with(self, text: str) -> bool:
        return any(text in e.text for e in self.all('[data-testid="ephemeral"]'))

    # --- messages in the channel pane, and their buttons ----------------------------------

    def card(self, text: str) -> WebElement | None:
        """The newest message in the channel pane that shows `text`."""
        found = [m for m in self.all('#message-list [data-testid="message"]') if text in m.text]
        return found[-1] if found else None

    def card_text(self, text: str, shows: str) -> str:
        """The text of the message showing `text`, once it also shows `shows`."""
        def ready(_) -> str | None:
            card = self.card(text)
            return card.text if card is not None and shows in card.text else None
        return self.wait(ready)

    def text_of(self, testid: str, *shows: str) -> str:
        """The text of the element `testid`, once it shows all of `shows`."""
        def ready(_) -> str | None:
            text = self.by_testid(testid).text
            return text if all(s in text for s in shows) else None
        return self.wait(ready)

    def _in_card(self, text: str, testid: str) -> WebElement:
        card = self.card(text)
        if card is None:  # not posted yet; and not the first such element on the whole page
            raise NoSuchElementException(text)
        return self.by_testid(testid, card)

    def click_on_card(self, text: str, label: str) -> None:
        self.wait(lambda _: self._in_card(text, f"action-{label}").click() or True)

    def has_button(self, text: str, label: str) -> bool:
        card = self.card(text)
        return card is not None and bool(
            card.find_elements(By.CSS_SELECTOR, f'[data-testid="action-{label}"]'))

    def thread_of(self, text: str, shows: str) -> str:
        """Open the thread under the message showing `text`; its text once it shows `shows`."""
        self.wait(lambda _: self._in_card(text, "replies-link").click() or True)
        return self.text_of("thread-panel", shows)

    def click_in_home(self, text: str, label: str) -> None:
        """Click `label` in the App Home row that shows `text` (the row's actions block follows
        its text blocks)."""
        xpath = (f'//*[@data-testid="app-home"]/div[contains(., {_literal(text)})]'
                 f'/following-sibling::div[contains(@class, "bk-actions")][1]'
                 f'//button[@data-label={_literal(label)}]')
        self.wait(lambda _: self.d.find_element(By.XPATH, xpath).click() or True)

    # --- modals ---------------------------------------------------------------------------

    def modal(self, title: str) -> WebElement:
        def ready(_) -> WebElement | None:
            modal = self.by_testid("modal")
            return modal if modal.is_displayed() and title in modal.text else None
        return self.wait(ready)

    def fill(self, block_id: str, text: str) -> None:
        field = self.d.find_element(By.ID, f"f-{block_id}")
        field.clear()
        field.send_keys(text)

    def submit_modal(self) -> None:
        self.click("modal-submit")

    def field_error(self, block_id: str, shows: str) -> str:
        """The error shown under the modal's field `block_id`, once it says `shows`."""
        def ready(_) -> str | None:
            error = self.by_testid(f"error-{block_id}")
            return error.text if error.is_displayed() and shows in error.text else None
        return self.wait(ready)

    def modal_closed(self) -> None:
        self.wait(lambda _: not self.d.find_element(By.ID, "modal-backdrop").is_displayed())


def _literal(text: str) -> str:
    # XPath 1.0 has no escapes: a string with a double quote needs the other kind of quotes.
    return f'"{text}"' if '"' not in text else f"'{text}'"
