#!/usr/bin/env python
"""Execute the notebooks on their real default path and (optionally) save them with their outputs.

Usage::

    .venv/bin/python scripts/execute_notebooks.py                 # run all three, report times, save nothing
    .venv/bin/python scripts/execute_notebooks.py --write         # save each executed notebook in place
    .venv/bin/python scripts/execute_notebooks.py --out runs/notebooks   # save the executed copies there
    .venv/bin/python scripts/execute_notebooks.py 01 --timeout 900

The real default path is the fine-tuned SmolLM2 recommender on MovieLens-100K with the quick
profile, exactly what a reader gets by opening a notebook and running every cell. Each saved
notebook records which run made its outputs (``metadata.recircuit``: command, profile, model,
wall seconds, date, recircuit's commit) in its metadata and in the line at its top that starts
with ``*Outputs:``, and plotly figures carry a static PNG next to their interactive JSON, so
they render where JavaScript does not. The times go to ``benchmarks/RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
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
    ap.add_argument("--out", default=None, help="save the executed notebooks into this folder instead")
    ap.add_argument("--timeout", type=int, default=3600,
                    help="seconds per cell (a first run trains the base recommender and Original in one cell)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RECIRCUIT_PROFILE", "quick")
    os.environ["RECIRCUIT_STATIC_FIGURES"] = "1"      # plotly figures also as PNG (renders without JavaScript)
    if args.out:     # notebook 03's figures beside the executed copies, not over the committed figures/
        os.environ.setdefault("RECIRCUIT_FIGURES_DIR", str((Path(args.out) / "figures").resolve()))
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
        if (args.write or args.out) and not errors:
            run = {
                "command": "scripts/execute_notebooks.py", "profile": os.environ["RECIRCUIT_PROFILE"],
                "model": os.environ.get("RECIRCUIT_NOTEBOOK_MODEL", "smollm2-135m-instruct (fine-tuned recommender)"),
                "seconds": round(secs, 1), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "commit": _commit(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}"}
            nb.metadata["recircuit"] = run
            nb.metadata.pop("widgets", None)  # progress-bar widget state: noise in a committed notebook
            for cell in nb.cells:            # and so are per-cell timestamps
                cell.metadata.pop("execution", None)
            _stamp(nb, run)
            target = Path(args.out) / path.name if args.out else path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".ipynb.tmp")
            nbformat.write(nb, tmp)
            os.replace(tmp, target)          # atomic: a failed write never leaves half a notebook
        print(json.dumps(rows[-1]), flush=True)
    return 1 if any(r["errors"] for r in rows) else 0


def _commit() -> str:
    """recircuit's commit (with ``+changes`` when the working tree differs), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "recircuit"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _stamp(nb, run: dict) -> None:
    """Rewrite the first markdown cell's ``*Outputs: ...*`` line to name the run that made the outputs."""
    line = (f"*Outputs: made by `{run['command']}` on {run['date']} (recircuit {run['commit']}, profile "
            f"{run['profile']}, {run['model']}, {run['machine']}; {run['seconds']:.0f} s top to bottom).*")
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            if re.search(r"^\*Outputs:.*\*$", cell.source, flags=re.M):
                cell.source = re.sub(r"^\*Outputs:.*\*$", lambda _m: line, cell.source, flags=re.M)
            else:
                cell.source += "\n\n" + line
            return


if __name__ == "__main__":
    sys.exit(main())
