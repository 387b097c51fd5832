"""Look at a report as a user would: render it in headless Chromium (Debian package ``chromium``).

:func:`render` takes a screenshot of an HTML report and returns the DOM after its scripts
ran. For a ``snakemake --report`` file (a single-page application whose results are
JavaScript data) ``show`` opens one result first, as a click in its menu would: the
result whose path ends with ``show`` is displayed with its category's listing beside it.
:func:`screenshot_statistics` tells a blank page from a drawn one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from equihash.io import InputError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")

# Opens the result whose path ends with SUFFIX in a Snakemake report (globals of its page:
# `results` path -> {data_uri, mime_type, ...}, `categories` name -> subcategory -> paths, `app`).
SNAKEMAKE_SHOW = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var path = Object.keys(results).find(function (p) { return p.endsWith(SUFFIX); });
    if (path === undefined) { document.title = "equihash-render: no result " + SUFFIX; return; }
    var category, subcategory;
    Object.keys(categories).forEach(function (c) {
      Object.keys(categories[c]).forEach(function (s) {
        if (categories[c][s].indexOf(path) >= 0) { category = c; subcategory = s; }
      });
    });
    var kind = results[path].mime_type.startsWith("image/") ? "img" : "html";
    app.setView({navbarMode: "subcategory", category: category, subcategory: subcategory,
                 content: kind, contentPath: results[path].data_uri, resultPath: path});
  }, 200);
});
</script>
"""


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Rendering:
    """A rendered page: the screenshot file and the DOM serialised after the page's scripts ran."""

    screenshot: Path
    dom: str


def _chromium(browser: str, url: str, *flags: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="equihash-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *flags, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def render(html_path, screenshot_path, *, show: str | None = None, window=(1400, 900),
           browser: str | None = None, timeout: float = 120.0) -> Rendering:
    """Screenshot ``html_path`` into ``screenshot_path`` (PNG) and return it with the rendered DOM.

    ``show``: for a Snakemake report, the end of the path of the result to open first.
    InputError when the page or a browser is missing or the browser fails."""
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise InputError(f"{html_path}: report not found")
    browser = browser or find_browser()
    if browser is None:
        raise InputError(f"no Chromium on PATH (tried {', '.join(BROWSERS)}); "
                         "install it, e.g. apt-get install chromium")
    screenshot_path = Path(screenshot_path)
    screenshot_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="equihash-render-") as tmp:
        page = html_path
        if show is not None:
            page = Path(tmp) / html_path.name
            text = html_path.read_text()
            script = SNAKEMAKE_SHOW.replace("SUFFIX", json.dumps(show))
            end = text.rfind("</body>")  # the page's own; scripts inside may spell the tag too
            page.write_text(text[:end] + script + text[end:] if end >= 0 else text + script)
        url = page.as_uri()
        size = f"--window-size={window[0]},{window[1]}"
        shot = _chromium(browser, url, size, f"--screenshot={screenshot_path.resolve()}", timeout=timeout)
        dom = _chromium(browser, url, size, "--dump-dom", timeout=timeout)
    if shot.returncode != 0 or not screenshot_path.is_file() or dom.returncode != 0:
        raise InputError(f"{html_path}: {browser} failed to render it (exit {shot.returncode}/{dom.returncode}): "
                         f"{(shot.stderr + dom.stderr)[-2000:]}")
    return Rendering(screenshot_path, dom.stdout)


def screenshot_statistics(png_path) -> dict:
    """How much a screenshot shows: its size, the number of distinct colours and the share
    of pixels that differ from the most common colour (the background). A blank page has
    one colour and a share of 0."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png_path))
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels * 255).astype(np.uint8)
    flat = pixels.reshape(-1, pixels.shape[-1])[:, :3]
    packed = (flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2]
    colours, counts = np.unique(packed, return_counts=True)
    return {"height": pixels.shape[0], "width": pixels.shape[1], "colours": len(colours),
            "foreground_share": 1.0 - counts.max() / len(packed)}
