"""The web UI in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium against a live master. Log in with a token, submit a task from the page
and see it reach SUCCEEDED with its output, pause a template and see it marked paused, cordon
a node and see it cordoned — each checked on the page and in the cluster through the SDK.
Screenshots of every page go to the test's output directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not driver_path or not chromium:
        pytest.fail("the web UI test needs Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path / "chromedriver.log")), options=opts)
    d.implicitly_wait(0)
    try:
        yield d
    finally:
        d.quit()


def test_log_in_submit_pause_and_cordon_in_a_browser(cluster: Cluster, browser: object, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()
    m = cluster.start_master()
    cluster.start_nodelet("a")
    node = cluster.node_id("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="nightly-report", run_script="echo report", cron_schedule="0 3 * * *"))  # type: ignore[attr-defined]
    base = f"http://{m.info['http']}"
    wait = WebDriverWait(d, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

    def text(css: str) -> str:
        return str(d.find_element(By.CSS_SELECTOR, css).text)  # type: ignore[attr-defined]

    def shot(name: str) -> None:
        d.save_screenshot(str(shots / f"{name}.png"))  # type: ignore[attr-defined]

    # log in: a wrong token is refused on the page, the admin's is taken
    d.get(base + "/")  # type: ignore[attr-defined]
    wait.until(ec.visibility_of_element_located((By.ID, "token")))
    d.find_element(By.ID, "token").send_keys("not-a-token")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "#login button").click()  # type: ignore[attr-defined]
    wait.until(lambda _: "not valid" in text("#login-error"))
    d.find_element(By.ID, "token").clear()  # type: ignore[attr-defined]
    d.find_element(By.ID, "token").send_keys(TOKEN)  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "#login button").click()  # type: ignore[attr-defined]
    wait.until(lambda _: node in text("#nodes") and "leader" in text("main"))
    shot("overview")

    # submit a task from the tasks page; its page shows it SUCCEEDED with its output
    d.get(base + "/#/tasks")  # type: ignore[attr-defined]
    wait.until(ec.visibility_of_element_located((By.ID, "submit-command")))
    d.find_element(By.ID, "submit-command").send_keys("echo from-the-ui")  # type: ignore[attr-defined]
    d.find_element(By.ID, "submit-button").click()  # type: ignore[attr-defined]
    wait.until(lambda _: "SUCCEEDED" in text("#task-info") and "from-the-ui" in text("#logs"))
    task_id = d.current_url.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
    assert c.get_task(task_id=task_id).state == pb.SUCCEEDED  # type: ignore[attr-defined]
    shot("task")
    d.get(base + "/#/tasks?state=SUCCEEDED")  # type: ignore[attr-defined]
    wait.until(lambda _: task_id in text("#tasks"))
    shot("tasks")

    # pause the template from its page
    d.get(base + "/#/templates")  # type: ignore[attr-defined]
    wait.until(lambda _: "nightly-report" in text("#templates") and "active" in text("#templates"))
    d.find_element(By.CSS_SELECTOR, f'tr[data-template="{tpl.template_id}"]').click()  # type: ignore[attr-defined]
    wait.until(ec.element_to_be_clickable((By.ID, "pause"))).click()
    wait.until(lambda _: "paused" in text("#template-info"))
    assert c.get_template(template_id=tpl.template_id).suspended  # type: ignore[attr-defined]
    shot("template")

    # cordon the node from the nodes page
    d.get(base + "/#/nodes")  # type: ignore[attr-defined]
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'tr[data-node="{node}"] button.cordon'))).click()
    wait.until(lambda _: "CORDONED" in text(f'tr[data-node="{node}"]'))
    assert c.get_node(node_id=node).state == pb.CORDONED  # type: ignore[attr-defined]
    shot("nodes")
    print(f"screenshots in {shots}")
    assert sorted(p.name for p in shots.iterdir()) == ["nodes.png", "overview.png", "task.png", "tasks.png", "template.png"]
