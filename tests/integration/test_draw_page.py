"""The draw-a-digit page (`GET /` of `mnist-pipeline serve`, serving/page/index.html) in a real browser: Debian's
chromium, headless, through Selenium, as tests/integration/test_mlflow_ui.py drives it (its fixtures and helpers
are imported from there). A small CNN trained here on 12,000 real MNIST images reads strokes drawn with mouse
events (pointer down, moves, up), as a person draws them; a picture chosen with the file input or dropped on
the canvas is predicted too; a model of another dataset labels its bars with its own class names. Each browser
test (slow) saves screenshots in its tmp_path and in test-artifacts/draw-page/ (git-ignored) at the repository's
root; one fast test checks the page needs nothing from another address."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, pipeline_server, save_screenshot
from tests.integration import test_mlflow_ui as mlflow_ui
from tests.integration.test_mlflow_ui import wait_for

# The MLflow UI test's fixtures, found by pytest here: Debian's chromium and chromedriver (skipped without them,
# failed in CI), headless, a fresh profile per test.
browser_binaries, browser = mlflow_ui.browser_binaries, mlflow_ui.browser

ARTIFACTS = REPO / "test-artifacts" / "draw-page"
WAIT = 30  # seconds the page may take to show a prediction
MNIST_CLASSES = [str(d) for d in range(10)]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220)}

PAGE = REPO / "src" / "mnist_pipeline" / "serving" / "page" / "index.html"


@dataclass
class Served:
    model_uri: str
    tracking_uri: str


def log_model(model, example: np.ndarray, metadata: dict, tmp: Path) -> Served:
    """`model` logged as train logs it (the compiled pyfunc loader, the dataset's metadata) in a new SQLite
    store under `tmp`."""
    import mlflow

    from mnist_pipeline.ml import compiled
    from mnist_pipeline.tracking import logged_models, runs, store

    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        store.setup({"tracking_uri": uri, "experiment": "draw-page-test"})
        with runs.training_run(model.name, {"model": model.name}, {}):
            model_uri = logged_models.log_keras_model(
                model, example, step=0, metadata=metadata, pyfunc_loader=compiled.__file__
            )
        mlflow.set_tracking_uri(None)  # leave no global store behind for other tests in this process
    return Served(model_uri, uri)


@pytest.fixture(scope="module")
def digits(browser_binaries, tmp_path_factory, mnist_mirror) -> Served:
    """A small CNN trained in-process on the first 12,000 real MNIST training images, 3 epochs (~15-25 s on 2
    cores; it must get over 95% of the first 500 test images right), logged with MNIST's metadata."""
    import keras

    from mnist_pipeline.data import idx
    from mnist_pipeline.ml import models, optimizers

    def read(name: str, images: bool, count: int) -> np.ndarray:
        payload = idx.read_payload(mnist_mirror / name)
        return (idx.parse_images if images else idx.parse_labels)(payload, name)[:count]

    x = read("train-images-idx3-ubyte.gz", True, 12_000)[..., None].astype(np.float32) / 255
    y = read("train-labels-idx1-ubyte.gz", False, 12_000)
    keras.utils.set_random_seed(0)
    block = {"filters": 32, "kernel": 3, "pool": True}
    model = models.convnet("draw_cnn", conv=[block, block], dense=[64], input_shape=(28, 28, 1), num_classes=10)
    optimizers.compile_model(model, {"name": "adam", "lr": 2e-3})
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    x_test = read("t10k-images-idx3-ubyte.gz", True, 500)[..., None].astype(np.float32) / 255
    right = (model.predict(x_test, verbose=0).argmax(axis=1) == read("t10k-labels-idx1-ubyte.gz", False, 500)).mean()
    assert right > 0.95, f"the test model is too weak: {right:.1%} of 500 test images right"
    metadata = {
        "dataset": "mnist",
        "classes": MNIST_CLASSES,
        "image_shape": [28, 28, 1],
        "preprocess": {"box": 20, "centre": "mass"},
    }
    return log_model(model, x[:1], metadata, tmp_path_factory.mktemp("draw-digits"))


@pytest.fixture(scope="module")
def colours(browser_binaries, tmp_path_factory) -> Served:
    """A tiny model of another dataset: 8x8 RGB pictures (pad) of three colours, named red, green and blue;
    trained for a second on plain noisy patches of each colour."""
    import keras

    from mnist_pipeline.ml import models, optimizers

    rng = np.random.default_rng(0)
    y = np.arange(600) % 3
    rgb = np.array(list(COLOURS.values()), np.float32)[y] / 255
    x = np.clip(rgb[:, None, None, :] + rng.normal(0, 0.08, (600, 8, 8, 3)), 0, 1).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = models.mlp("colours", hidden=[16], input_shape=(8, 8, 3), num_classes=3)
    optimizers.compile_model(model, {"name": "adam", "lr": 1e-2})
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    metadata = {
        "dataset": "colours",
        "classes": list(COLOURS),
        "image_shape": [8, 8, 3],
        "preprocess": {"method": "pad"},
    }
    return log_model(model, x[:1], metadata, tmp_path_factory.mktemp("draw-colours"))


@pytest.fixture(scope="module")
def digits_page(digits, tmp_path_factory) -> Iterator[str]:
    """`mnist-pipeline serve` for that model; yields the page's URL."""
    with pipeline_server(digits.model_uri, digits.tracking_uri, tmp_path_factory.mktemp("draw-serve")) as server:
        yield f"http://127.0.0.1:{server.port}/"


# ---- what a person does on the page: draw, clear, choose a picture, read the answer ----------------------------

# Strokes in the canvas's own coordinates (0..1 of its width and height), each a list of points.
SEVEN = [[(0.22, 0.2), (0.78, 0.2)], [(0.78, 0.2), (0.4, 0.85)]]
ONE = [[(0.5, 0.15), (0.5, 0.85)]]
ZERO = [[(0.5 + 0.22 * math.sin(a), 0.5 - 0.33 * math.cos(a)) for a in np.linspace(0, 2 * math.pi, 25)]]


def draw(driver, strokes: list[list[tuple[float, float]]], step: float = 8) -> None:
    """Each stroke as a mouse drag (pointer down, a move every `step` CSS pixels, up) on the canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    width, height = canvas.rect["width"], canvas.rect["height"]

    def offset(point: tuple[float, float]) -> tuple[int, int]:  # WebDriver's offsets are from the centre
        return round((point[0] - 0.5) * width), round((point[1] - 0.5) * height)

    for stroke in strokes:
        actions = ActionChains(driver, duration=0)
        actions.move_to_element_with_offset(canvas, *offset(stroke[0])).click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            n = max(1, math.ceil(math.hypot((x1 - x0) * width, (y1 - y0) * height) / step))
            for i in range(1, n + 1):
                actions.move_to_element_with_offset(canvas, *offset((x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n)))
        actions.release().perform()


def by_id(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def bars(driver) -> list[tuple[str, float, str]]:
    """The bar rows: (data-class, data-probability, the row's text)."""
    from selenium.webdriver.common.by import By

    return [
        (row.get_attribute("data-class"), float(row.get_attribute("data-probability") or "nan"), row.text)
        for row in driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
    ]


def open_page(driver, url: str, classes: list[str]) -> None:
    driver.get(url)
    wait_for(driver, lambda d: [c for c, _, _ in bars(d)] == classes, f"one bar per class {classes}", WAIT)


def shows_prediction(driver, expected: str, what: str) -> float:
    """Waits until the page shows `expected` as its top class (an error shown instead fails at once); checks the
    bars agree; returns its probability."""
    result = by_id(driver, "result")
    wait_for(
        driver,
        lambda d: by_id(d, "top-class").text == expected or result.get_attribute("data-state") == "error",
        f"{what}: top class {expected!r}",
        WAIT,
    )
    assert result.get_attribute("data-state") == "done", f"{what}: {by_id(driver, 'status').text}"
    rows = bars(driver)
    probabilities = {c: p for c, p, _ in rows}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3), rows
    assert max(probabilities, key=probabilities.get) == expected, rows
    top = by_id(driver, "top-probability").text
    assert top.endswith("%") and float(top[:-1]) == pytest.approx(100 * probabilities[expected], abs=0.1), top
    for name, _, text in rows:  # each row names its class and prints its probability
        assert text.split()[0] == name and text.endswith("%"), text
    return probabilities[expected]


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    return save_screenshot(driver, tmp_path, name, ARTIFACTS, settle=0.3)  # the bars' width transition


def drop(driver, picture: Path, mime: str = "image/png") -> None:
    """`picture` dropped on the canvas as a file dragged from the desktop arrives: dragenter, dragover and drop
    events carrying it (WebDriver cannot drag a file from outside the browser; the page's handlers are the same)."""
    import base64

    driver.execute_script(
        """const [data, name, type] = arguments, bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer(), canvas = document.getElementById('canvas');
        transfer.items.add(new File([bytes], name, {type}));
        for (const kind of ['dragenter', 'dragover', 'drop'])
          canvas.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));""",
        base64.b64encode(picture.read_bytes()).decode(),
        picture.name,
        mime,
    )


def ink_on_canvas(driver) -> int:
    """How many of the canvas's pixels are not white paper."""
    return driver.execute_script(
        "const c = document.getElementById('canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) n++;"
        "return n;"
    )


# ---- the tests -----------------------------------------------------------------------------------------------


def test_the_page_needs_nothing_from_elsewhere():
    """One file, its CSS and JavaScript inline: no script, style sheet, font or picture from another address,
    so the page works where the server has no internet (the icon is an empty data: URL, so no /favicon.ico)."""
    import re

    html = PAGE.read_text()
    assert not re.search(r"(?i)<script[^>]*\bsrc=|<link[^>]*stylesheet|@import", html)
    assert not re.search(r"\burl\(", html)  # CSS url(...); JavaScript's URL.createObjectURL is the dropped file
    assert not re.search(r"(?i)https?:|//[a-z0-9.-]+\.[a-z]{2,}/", html), re.findall(r"(?i)\S*https?:\S*", html)
    assert '<link rel="icon" href="data:,">' in html
    for name in ("canvas", "clear", "file", "top-class", "top-probability", "bars", "status", "result"):
        assert f'id="{name}"' in html  # what the tests below find the page's parts by


@pytest.mark.slow
def test_a_drawn_seven_and_a_drawn_one_are_read(browser, digits_page, tmp_path):
    """Strokes drawn with the mouse: a 7 (a bar, then a diagonal) is the top class; Clear wipes the canvas and the
    answer; a 1 (one vertical stroke) is read next, and a 0 (a loop) after that."""
    from selenium.webdriver.common.by import By

    open_page(browser, digits_page, MNIST_CLASSES)
    assert browser.title == "Draw a digit" and by_id(browser, "heading").text == "Draw a digit"
    assert by_id(browser, "canvas").value_of_css_property("touch-action") == "none"
    assert by_id(browser, "top-class").text in ("", "–") and ink_on_canvas(browser) == 0

    draw(browser, SEVEN)
    p = shows_prediction(browser, "7", "a drawn 7")
    assert p > 0.5, p
    assert browser.find_element(By.CSS_SELECTOR, "#bars .bar.best").get_attribute("data-class") == "7"
    screenshot(browser, tmp_path, "01-drawn-seven.png")

    by_id(browser, "clear").click()
    wait_for(browser, lambda d: by_id(d, "top-class").text in ("", "–"), "the cleared answer", WAIT)
    assert ink_on_canvas(browser) == 0
    assert [p for _, p, _ in bars(browser)] == [0.0] * 10
    screenshot(browser, tmp_path, "02-cleared.png")

    draw(browser, ONE)
    shows_prediction(browser, "1", "a drawn 1")
    screenshot(browser, tmp_path, "03-drawn-one.png")

    by_id(browser, "clear").click()
    draw(browser, ZERO)
    shows_prediction(browser, "0", "a drawn 0")
    screenshot(browser, tmp_path, "04-drawn-zero.png")


@pytest.mark.slow
def test_a_chosen_or_dropped_picture_is_predicted(browser, digits_page, mnist_mirror, tmp_path):
    """MNIST test digits saved as pictures, scaled up and dark on light as a scan would be: a 4 (PNG) chosen with
    the file input and a 2 (JPEG) dropped on the canvas each appear on the canvas and are the top class; a file
    that is no picture gets the server's message."""
    from mnist_pipeline.data import idx

    images = idx.parse_images(idx.read_payload(mnist_mirror / "t10k-images-idx3-ubyte.gz"), "t10k-images")
    labels = idx.parse_labels(idx.read_payload(mnist_mirror / "t10k-labels-idx1-ubyte.gz"), "t10k-labels")
    four, two = tmp_path / "four.png", tmp_path / "two.jpg"
    for path, digit in ((four, 4), (two, 2)):
        index = int(np.flatnonzero(labels == digit)[0])
        Image.fromarray(255 - images[index]).resize((112, 112), Image.Resampling.BICUBIC).save(path)

    open_page(browser, digits_page, MNIST_CLASSES)
    by_id(browser, "file").send_keys(str(four))
    shows_prediction(browser, "4", "a chosen MNIST 4")
    assert ink_on_canvas(browser) > 500  # the picture is shown where one draws
    screenshot(browser, tmp_path, "05-chosen-picture.png")

    by_id(browser, "clear").click()
    drop(browser, two, "image/jpeg")
    shows_prediction(browser, "2", "a dropped MNIST 2")
    assert ink_on_canvas(browser) > 500
    screenshot(browser, tmp_path, "06-dropped-picture.png")

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture")
    by_id(browser, "file").send_keys(str(broken))
    wait_for(
        browser,
        lambda d: "error" in by_id(d, "status").get_attribute("class"),
        "the server's message for a broken picture",
        WAIT,
    )
    assert "cannot read image" in by_id(browser, "status").text, by_id(browser, "status").text  # pictures.conform's
    assert by_id(browser, "top-class").text in ("", "–")
    screenshot(browser, tmp_path, "07-broken-picture.png")


@pytest.mark.slow
def test_another_datasets_model_names_its_classes(browser, colours, tmp_path_factory, tmp_path):
    """A model of the `colours` dataset: the title names the dataset, the bars are red, green and blue, and a
    red picture chosen with the file input is red."""
    folder = tmp_path_factory.mktemp("colours-serve")
    with pipeline_server(colours.model_uri, colours.tracking_uri, folder) as server:
        open_page(browser, f"http://127.0.0.1:{server.port}/", list(COLOURS))
        assert browser.title == "Draw or drop a picture — colours", browser.title
        assert by_id(browser, "heading").text == browser.title
        picture = tmp_path / "red.png"
        Image.new("RGB", (40, 30), COLOURS["red"]).save(picture)
        by_id(browser, "file").send_keys(str(picture))
        shows_prediction(browser, "red", "a red picture")
        assert [text.split()[0] for _, _, text in bars(browser)] == list(COLOURS)
        screenshot(browser, tmp_path, "08-colours-model.png")
