"""Render exported HTML in headless Chromium with the network blocked: non-blank, expected elements,
and no network request made by the page.

Chromium comes from Debian's packages (``apt-get install chromium``); the tests skip with that
advice where it is absent. Each page is loaded with every host name unresolvable
(``--host-resolver-rules``), so it can only render if it needs no network; a probe script
appended to a copy of the page also lists the resources the page fetched (Resource Timing) and
the test asserts none of them is http(s).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from recircuit.viz import (
    attention_patterns_from_arrays,
    circuit_diagram,
    group_scatter,
    save_figure,
    save_html,
)

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const urls = performance.getEntriesByType("resource").map(e => e.name);
  const pre = document.createElement("pre"); pre.id = "recircuit-net";
  pre.textContent = JSON.stringify(urls); document.body.appendChild(pre);
}, 1500));
</script>"""


def _chromium(args: list[str], tmp: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=8000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes) without Pillow."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * ch)
    out = np.zeros((height, width * ch), dtype=np.int32)
    prev = np.zeros(width * ch, dtype=np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros_like(line)
        if f == 0:
            cur = line
        elif f == 1:
            cur = np.cumsum(line.reshape(-1, ch), axis=0).reshape(-1) & 255
        elif f == 2:
            cur = (line + prev) & 255
        else:
            for x in range(len(line)):
                a = cur[x - ch] if x >= ch else 0
                b, c = prev[x], prev[x - ch] if x >= ch else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 255
        out[y], prev = cur, cur
    return out.reshape(height, width, ch)[..., :3]


def _render(page: Path, tmp: Path) -> tuple[np.ndarray, str, list[str]]:
    """Screenshot, rendered DOM, and the URLs the page fetched."""
    probe = page.with_name(page.stem + "_probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    shot = tmp / (page.stem + ".png")
    r = _chromium(["--window-size=900,700", f"--screenshot={shot}", page.as_uri()], tmp)
    assert shot.exists(), f"Chromium wrote no screenshot: {r.stderr[-2000:]}"
    dom = _chromium(["--dump-dom", probe.as_uri()], tmp).stdout
    m = re.search(r'<pre id="recircuit-net">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run (page failed to load?)"
    return _png_pixels(shot.read_bytes()), dom, json.loads(m.group(1).replace("&quot;", '"'))


def _assert_not_blank(px: np.ndarray) -> None:
    non_white = (px < 235).any(axis=2).mean()
    assert non_white > 0.01, f"only {non_white:.2%} of the screenshot is not white: blank render"
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20, "too few colours: nothing was drawn"


def test_plotly_figures_render_offline(grouping_df, edges_df, tmp_path):
    scatter = save_figure(group_scatter(grouping_df, {"forget": 0.1, "retain": 0.15}), tmp_path / "groups.html")
    px, dom, urls = _render(scatter, tmp_path)
    _assert_not_blank(px)
    assert 'class="main-svg"' in dom and "a1.h2" in dom and "forget threshold" in dom
    assert len(re.findall(r'class="point[ "]', dom)) >= len(grouping_df)   # every module drawn as a marker
    assert not [u for u in urls if u.startswith("http")], f"network requests: {urls}"
    # the group colour reached the screen: Okabe-Ito vermillion (213, 94, 0) pixels exist
    assert (np.abs(px - np.array([213, 94, 0])).sum(axis=2) < 30).any()

    circ = save_figure(circuit_diagram(edges_df, n_layers=2, n_heads=3, group_size=3), tmp_path / "circuit.html")
    px, dom, urls = _render(circ, tmp_path)
    _assert_not_blank(px)
    assert "logits" in dom and "a0.h1" in dom
    assert not [u for u in urls if u.startswith("http")], f"network requests: {urls}"


def test_circuitsvis_renders_offline(tmp_path):
    pats = np.tril(np.ones((2, 4, 4))) / np.arange(1, 5)[None, :, None]
    page = save_html(attention_patterns_from_arrays(["User", " likes", " Alpha", "?"], pats, ["a0.h1", "a1.h0"]),
                     tmp_path / "attention.html")
    px, dom, urls = _render(page, tmp_path)
    _assert_not_blank(px)
    assert dom.count("<canvas") >= 2 and "a0.h1" in dom             # head thumbnails + zoomed pattern
    assert not [u for u in urls if u.startswith("http")], f"network requests: {urls}"
