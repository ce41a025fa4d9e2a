"""report.html as a person sees it: every figure is an image that loads.

The static half runs everywhere: each `<img>` source is a PNG data URI that decodes, or a file next to the report
that is one. The browser half renders the report in headless Chromium (skipped where none is installed: Debian's
`chromium` package provides one) and reads back, from the page itself, which images the browser could not show.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from rlvr.eval import EvalSettings, Sample
from rlvr.eval.report import write_report
from rlvr.eval.summary import metrics
from rlvr.types import Problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append({key: value or "" for key, value in attrs})


def images(page: str) -> list[dict[str, str]]:
    """The attributes of every `<img>` on the page, in order."""
    parser = _Images()
    parser.feed(page)
    return parser.images


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header chunk; ValueError if the bytes are not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def image_bytes(src: str, folder: Path) -> bytes:
    """What an `<img src>` points at: a base64 data URI's payload, or a file relative to the report's folder."""
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        if header != "data:image/png;base64":
            raise ValueError(f"not a base64 PNG data URI: {header}")
        return base64.b64decode(payload, validate=True)
    if urlparse(src).scheme:  # http(s) and friends: a report must open offline, from its folder alone
        raise ValueError(f"not a local image: {src}")
    return (folder / unquote(src)).read_bytes()


def broken_images(report: Path) -> dict[str, str]:
    """Each image of the report that would not load, by its alt text (or source), with the reason."""
    broken = {}
    for image in images(report.read_text()):
        name = image.get("alt") or image.get("src", "")[:60]
        try:
            width, height = png_size(image_bytes(image.get("src", ""), report.parent))
            if width == 0 or height == 0:
                raise ValueError(f"empty image ({width}x{height})")
        except (OSError, ValueError) as error:
            broken[name] = str(error)
    return broken


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A real report.html, from the real summary code, on samples made up for two subsets (no model needed)."""
    problems = [Problem(f"{i} + {i}?", str(2 * i), subset="small" if i < 4 else "large") for i in range(8)]
    samples = [
        Sample(
            problem.question,
            f"Answer: {2 * q + s % 2}",
            thinking_tokens=0,
            answer_tokens=3 + (q + s) % 5,
            forced=False,
            truncated=False,
            mean_logprob=-0.1 * s,
            subset=problem.subset,
            question=problem.question,
            reference=problem.answer,
            sample=s,
            correct=s % 2 == 0 or q % 3 == 0,
            extracted=str(2 * q + s % 2),
        )
        for q, problem in enumerate(problems)
        for s in range(4)
    ]
    settings = EvalSettings(n=4, ks=(1, 2, 4), resamples=200)
    out = tmp_path_factory.mktemp("report")
    write_report(out, metrics(problems, samples, settings, seconds=1.0), samples)
    return out / "report.html"


def test_every_image_source_is_a_png_that_decodes(report):
    found = images(report.read_text())
    assert [image["alt"] for image in found] == ["accuracy vs k", "tokens spent", "accuracy per subset"]
    assert broken_images(report) == {}


def test_the_static_check_finds_what_would_not_load(report, tmp_path):
    page = tmp_path / "report.html"
    (tmp_path / "curve.png").write_bytes(image_bytes(images(report.read_text())[0]["src"], report.parent))
    (tmp_path / "fake.png").write_bytes(b"<html>not an image</html>")
    tags = [
        '<img src="curve.png" alt="a file next to it">',
        '<img src="missing.png" alt="missing">',
        '<img src="fake.png" alt="not a png">',
        '<img src="data:image/png;base64,AAAA" alt="bad data">',
        '<img src="https://example.org/x.png" alt="remote">',
    ]
    page.write_text(f"<html><body>{''.join(tags)}</body></html>")
    assert sorted(broken_images(page)) == ["bad data", "missing", "not a png", "remote"]


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


# After `load`, the page writes what the browser made of each image into itself, for --dump-dom to carry out.
PROBE = """<script>
addEventListener("load", () => {
  const seen = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                width: i.naturalWidth, height: i.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def rendered_images(report: Path, folder: Path) -> list[dict]:
    """Each image of the report as headless Chromium loaded it, from a copy (with the probe) in `folder`, beside
    the report's own images."""
    shutil.copytree(report.parent, folder, dirs_exist_ok=True)
    page = folder / report.name
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    command = [
        _browser(),
        "--headless",
        "--no-sandbox",  # as root in a container there is no sandbox to start
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={folder.parent / 'chromium-profile'}",
        "--virtual-time-budget=10000",  # let the load event (and the probe) run before the DOM is dumped
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no probe output from {command[0]} (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


needs_browser = pytest.mark.skipif(_browser() is None, reason=f"no headless browser on PATH ({', '.join(BROWSERS)})")


@needs_browser
def test_every_image_loads_in_a_browser(report, tmp_path):
    seen = rendered_images(report, tmp_path / "page")
    assert [image["alt"] for image in seen] == ["accuracy vs k", "tokens spent", "accuracy per subset"]
    assert [image["alt"] for image in seen if not image["ok"]] == []
    # The browser decoded each PNG to the size its header declares.
    declared = [png_size(image_bytes(image["src"], report.parent)) for image in images(report.read_text())]
    assert [(image["width"], image["height"]) for image in seen] == declared


@needs_browser
def test_the_browser_probe_sees_a_broken_image(report, tmp_path):
    broken = tmp_path / "broken" / "report.html"
    broken.parent.mkdir()
    broken.write_text(report.read_text().replace("</body>", '<img src="missing.png" alt="missing"></body>'))
    seen = rendered_images(broken, tmp_path / "page")
    assert [image["alt"] for image in seen if not image["ok"]] == ["missing"]
