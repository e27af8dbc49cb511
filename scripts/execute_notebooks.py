#!/usr/bin/env python
"""Execute the notebooks on their real default path and (optionally) save them with their outputs.

Usage::

    .venv/bin/python scripts/execute_notebooks.py                 # run all three, report times, save nothing
    .venv/bin/python scripts/execute_notebooks.py --write         # save each executed notebook in place
    .venv/bin/python scripts/execute_notebooks.py 01 --timeout 900

The real default path is the fine-tuned SmolLM2 recommender on MovieLens-100K with the quick
profile, exactly what a reader gets by opening a notebook and running every cell. Each saved
notebook records which run made its outputs (``metadata.recircuit``: command, profile, model,
wall seconds, date), and plotly figures carry a static PNG next to their interactive JSON, so
they render where JavaScript does not. The times go to ``benchmarks/RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen notebooks top to bottom in the ``notebooks/`` directory; print a time per notebook."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--write", action="store_true", help="save the executed notebooks in place (with outputs)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args(argv)
    os.environ.setdefault("RECIRCUIT_PROFILE", "quick")
    os.environ["RECIRCUIT_STATIC_FIGURES"] = "1"      # plotly figures also as PNG (renders without JavaScript)
    rows = []
    for path in NOTEBOOKS:
        if args.only and not any(path.name.startswith(p) for p in args.only):
            continue
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        secs = time.perf_counter() - t0
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        rows.append({"notebook": path.name, "seconds": round(secs, 1), "errors": len(errors)})
        if args.write and not errors:
            nb.metadata["recircuit"] = {
                "command": "scripts/execute_notebooks.py --write", "profile": os.environ["RECIRCUIT_PROFILE"],
                "model": os.environ.get("RECIRCUIT_NOTEBOOK_MODEL", "smollm2-135m-instruct (fine-tuned recommender)"),
                "seconds": round(secs, 1), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}"}
            nbformat.write(nb, path)
        print(json.dumps(rows[-1]), flush=True)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
