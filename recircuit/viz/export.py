"""Save figures: self-contained HTML, and static SVG, PDF and PNG for papers, offline.

Usage::

    from recircuit.viz import save_figure, save_html, static_export_session
    save_figure(fig, "figures/groups.html")      # plotly.js inlined: opens offline, no CDN
    save_figure(fig, "figures/groups.pdf")       # also .svg and .png (300 dpi)
    with static_export_session():                # one browser for many static files (much faster)
        for name, f in figs.items():
            save_figure(f, f"figures/{name}.svg")
    save_html(attention_html, "figures/attention.html")   # circuitsvis output

**What static export needs.** plotly draws SVG/PDF/PNG through ``kaleido>=1``, which drives a
headless Chromium. Install both::

    pip install "kaleido>=1"           # or: pip install "recircuit[figures]"
    apt-get install chromium           # Debian/Ubuntu; or set BROWSER_PATH to any Chrome/Chromium

recircuit runs kaleido fully offline: plotly.js comes from the installed plotly package and
MathJax is off (figures use no LaTeX), so no CDN is contacted. HTML export needs neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from recircuit._io import atomic_write_bytes, atomic_write_text
from recircuit.viz.style import PNG_SCALE

STATIC_FORMATS = ("svg", "pdf", "png")
HTML_CONFIG = {"displaylogo": False, "responsive": True,
               "toImageButtonOptions": {"format": "svg", "filename": "recircuit_figure"}}

_INSTALL_HINT = ("Install it with: pip install 'kaleido>=1' (Python) and a Chromium, e.g. "
                 "apt-get install chromium on Debian/Ubuntu, or set BROWSER_PATH to a Chrome/Chromium binary. "
                 "HTML export (.html) works without either.")


class StaticExportUnavailable(RuntimeError):
    """Static export (SVG/PDF/PNG) cannot run here; the message says what to install."""


def find_browser() -> str | None:
    """Path of the Chromium/Chrome kaleido will use (``BROWSER_PATH`` first), or None."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if path := shutil.which(name):
            return path
    try:
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - best-effort search; None means "not found"
        return None


def static_export_available() -> tuple[bool, str]:
    """Whether SVG/PDF/PNG export can run, and why not (the fix) when it cannot."""
    try:
        import kaleido
    except ImportError:
        return False, f"Static export needs the 'kaleido' package (not installed). {_INSTALL_HINT}"
    version = getattr(kaleido, "__version__", "1")
    if not hasattr(kaleido, "calc_fig_sync"):
        return False, f"kaleido {version} is too old: recircuit needs kaleido>=1. {_INSTALL_HINT}"
    if find_browser() is None:
        return False, f"kaleido found no Chromium/Chrome browser. {_INSTALL_HINT}"
    return True, "ok"


def _kaleido_kwargs() -> dict[str, Any]:
    import plotly

    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    kw: dict[str, Any] = {"mathjax": False}
    if js.is_file():
        kw["plotlyjs"] = str(js)
    if browser := find_browser():
        kw["path"] = browser
    return kw


_SESSION = {"active": False}


@contextlib.contextmanager
def static_export_session() -> Iterator[None]:
    """Keep one headless browser running for every static export inside the block.

    The first image takes a few seconds (browser start); the rest take well under one each.
    """
    ok, reason = static_export_available()
    if not ok:
        raise StaticExportUnavailable(reason)
    import kaleido

    if _SESSION["active"]:
        yield
        return
    kaleido.start_sync_server(silence_warnings=True, **_kaleido_kwargs())
    _SESSION["active"] = True
    try:
        yield
    finally:
        _SESSION["active"] = False
        kaleido.stop_sync_server(silence_warnings=True)


def figure_to_image(fig: go.Figure, fmt: str, scale: float | None = None) -> bytes:
    """SVG, PDF or PNG bytes of ``fig`` through kaleido (offline).

    Raises:
        StaticExportUnavailable: kaleido or a browser is missing (the message says what to install).
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in STATIC_FORMATS:
        raise ValueError(f"Static format must be one of {STATIC_FORMATS}, got {fmt!r}.")
    ok, reason = static_export_available()
    if not ok:
        raise StaticExportUnavailable(reason)
    import kaleido

    layout = fig.layout
    opts = {"format": fmt, "width": layout.width or 700, "height": layout.height or 500,
            "scale": scale if scale is not None else (PNG_SCALE if fmt == "png" else 1)}
    try:
        if _SESSION["active"]:
            out = kaleido.calc_fig_sync(fig.to_dict(), opts=opts)
        else:
            out = kaleido.calc_fig_sync(fig.to_dict(), opts=opts, kopts=_kaleido_kwargs())
    except Exception as e:  # kaleido wraps browser failures in many types
        raise StaticExportUnavailable(f"kaleido could not render the figure as {fmt}: {type(e).__name__}: {e}. "
                                      f"{_INSTALL_HINT}") from e
    return out if isinstance(out, bytes) else bytes(out)


def figure_to_html(fig: go.Figure) -> str:
    """A full, self-contained HTML page of ``fig`` (plotly.js inlined, no CDN, no MathJax)."""
    return fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True, config=HTML_CONFIG)


def save_html(html: Any, path: str | os.PathLike, title: str = "recircuit") -> Path:
    """Write HTML (a string, circuitsvis output, or anything with ``_repr_html_``) as a full page.

    circuitsvis objects are written from their inlined ``local_src``, never the CDN version.
    """
    if hasattr(html, "local_src"):
        body = html.local_src
    elif isinstance(html, str):
        body = str(html)
    elif hasattr(html, "_repr_html_"):
        body = html._repr_html_()
    else:
        raise TypeError(f"save_html takes an HTML string or circuitsvis output, got {type(html).__name__}.")
    if "<html" not in body[:500].lower():
        body = (f"<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n</head>\n"
                f"<body>\n{body}\n</body>\n</html>\n")
    return atomic_write_text(path, body)


def save_figure(fig: Any, path: str | os.PathLike, scale: float | None = None) -> Path:
    """Save a figure by the path's suffix: ``.html``, ``.svg``, ``.pdf`` or ``.png``.

    Args:
        fig: a plotly figure, or circuitsvis/HTML output (``.html`` only).
        path: destination; parents are created, the write is atomic.
        scale: PNG/SVG/PDF scale factor (PNG default: 300 dpi at the figure's paper size).

    Raises:
        ValueError: unknown suffix, or a non-plotly figure to a static format.
        StaticExportUnavailable: static export lacks kaleido or Chromium (the message says what
            to install).
    """
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("html", "htm"):
        if isinstance(fig, go.Figure):
            return atomic_write_text(path, figure_to_html(fig))
        return save_html(fig, path)
    if suffix in STATIC_FORMATS:
        if not isinstance(fig, go.Figure):
            raise ValueError(f"Only plotly figures export to .{suffix}; save circuitsvis output as .html.")
        return atomic_write_bytes(path, figure_to_image(fig, suffix, scale))
    raise ValueError(f"Unknown figure format {path.suffix!r} for {path}: use .html, .svg, .pdf or .png.")
