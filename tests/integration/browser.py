# SPDX-License-Identifier: MIT
"""The Cockpit application in a real browser: cockpit-ws (no TLS, a local session, on loopback) as a given
user on the private system bus, serving this build's application, and Debian's chromium driven by
chromium-driver through python3-selenium. Screenshots go to PUREBOOT_SCREENSHOTS (tests/run: the build
directory's screenshots/), else the test's directory."""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness import BUILD, free_port, wait_for

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
APP_FILES = ("index.html", "index.js", "index.css", "manifest.json")


class CockpitWs:
    """cockpit-ws --local-session as user (with the groups the user database gives it), its bridge on bus."""

    def __init__(self, bus, user, log):
        self.bus, self.user, self.log = bus, user, log
        self.proc = None
        # The application as it installs: <data dir>/cockpit/pureboot, readable by user.
        self.data = Path(tempfile.mkdtemp(prefix="pureboot-cockpit-"))
        app = self.data / "cockpit/pureboot"
        app.mkdir(parents=True)
        for name in APP_FILES:
            built = BUILD / "cockpit" / name
            assert built.exists(), f"{built} was not built: configure with -Dcockpit=enabled (needs npm and esbuild)"
            shutil.copyfile(built, app / name)
        (self.data / "runtime").mkdir(mode=0o700)
        subprocess.run(["chown", "-R", f"{user}:", str(self.data / "runtime")], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(self.data)], check=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        # This build's purebootctl first: the application runs it for the desktop's disks.
        env = dict(self.bus.env, XDG_DATA_DIRS=f"{self.data}:/usr/share", HOME=str(self.data),
                   PATH=f"{BUILD / 'src/ctl'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   XDG_RUNTIME_DIR=str(self.data / "runtime"), LANG="C.UTF-8")
        # --init-groups: the user's groups as the user database has them, as a login would give them.
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--", COCKPIT_WS,
             "--local-session=cockpit-bridge", f"--port={self.port}", "--address=127.0.0.1"],
            env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

        def up():
            assert self.proc.poll() is None, f"cockpit-ws ended:\n{Path(self.log).read_text()}"
            r = subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{self.url}/cockpit/@localhost/manifests.json"])
            return r.returncode == 0
        wait_for(up, timeout=20, what="cockpit-ws to answer")
        return self

    def stop(self):
        """cockpit-ws and its session's bridge: the whole process group it leads."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # The bridge may outlive cockpit-ws briefly: nothing of the group stays.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, AttributeError):
            pass
        shutil.rmtree(self.data, ignore_errors=True)


class Browser:
    """Headless chromium on one page of the application; find() and wait_text() read the page's content."""

    def __init__(self, screenshots):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                  "--lang=en-US"):
            options.add_argument(a)
        options.binary_location = "/usr/bin/chromium"
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        self.screenshots = Path(screenshots)
        self.screenshots.mkdir(parents=True, exist_ok=True)

    def open(self, ws, page=""):
        """The application inside Cockpit's shell, page being its location (sessions/ID, nodes)."""
        self.driver.switch_to.default_content()
        self.driver.get(f"{ws.url}/pureboot#/{page}")
        frame = self.wait(lambda d: d.find_elements("css selector", "iframe[name='cockpit1:localhost/pureboot']"),
                          "the application's frame in Cockpit's shell")[0]
        self.driver.switch_to.frame(frame)
        self.wait(lambda d: d.find_elements("css selector", "body[data-loaded]"), "the application to load")

    def go(self, page):
        """Another page of the application, as its links go there."""
        self.driver.execute_script(f"window.location.hash = '#/{page}'")

    def wait(self, condition, what, timeout=30):
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except Exception as e:
            self.shot("timeout")
            logs = "\n".join(str(entry) for entry in self.driver.get_log("browser"))
            raise AssertionError(f"waiting for {what}: {e!r}\nthe page says:\n{self.text()}\nconsole:\n{logs}")

    def find(self, css):
        return self.driver.find_element("css selector", css)

    def finds(self, css):
        return self.driver.find_elements("css selector", css)

    def text(self, css="body"):
        try:
            return self.find(css).text
        except Exception:
            return ""

    def wait_text(self, css, predicate, what, timeout=30):
        """Until the text of the element at css satisfies predicate; returns that text."""
        def check(d):
            t = self.text(css)
            return t if predicate(t) else False
        return self.wait(check, what, timeout)

    def type(self, css, text):
        """Types text into the input at css, again if the page redrew it meanwhile (lists redraw as objects
        change; what was typed is kept, but an element replaced mid-typing takes no more keys)."""
        from selenium.common.exceptions import StaleElementReferenceException

        def typed(d):
            try:
                e = self.find(css)
                if e.get_attribute("value") != text:
                    e.clear()
                    e.send_keys(text)
                return self.find(css).get_attribute("value") == text
            except StaleElementReferenceException:
                return False
        self.wait(typed, f"{text!r} typed into {css}")

    def click(self, css):
        self.wait(lambda d: d.find_elements("css selector", css), f"{css} on the page")
        self.find(css).click()

    def shot(self, name):
        """A screenshot of the whole window (shell and application)."""
        frame = None
        try:
            self.driver.switch_to.default_content()
            path = self.screenshots / f"{name}.png"
            self.driver.save_screenshot(str(path))
            frame = self.finds("iframe[name='cockpit1:localhost/pureboot']")
        finally:
            if frame:
                self.driver.switch_to.frame(frame[0])
        return path

    def quit(self):
        self.driver.quit()


def screenshots_dir(tmp_path):
    return Path(os.environ.get("PUREBOOT_SCREENSHOTS") or tmp_path / "screenshots")

