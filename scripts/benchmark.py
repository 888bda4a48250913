#!/usr/bin/env python
"""Run the measured benchmarks and write their tables to docs/benchmarks.md.

    python scripts/benchmark.py                 # every section
    python scripts/benchmark.py --only explain  # one section (train, explain, space, accuracy, quantisation)

Each section lives in scripts/benchmarks/<name>.py with ``run(args) -> str`` (a markdown table;
``import benchmarks.<name>`` works as Python puts this script's folder, scripts/, first on sys.path);
its output replaces the text between ``<!-- name -->`` and ``<!-- /name -->`` in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
from pathlib import Path

from artlens.files import write_text

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("train", "explain", "space", "accuracy", "quantisation")
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nMeasured by `python scripts/benchmark.py` (sections re-run with `--only NAME`).\n"


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    text = doc.read_text() if doc.exists() else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(doc, text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=SECTIONS, default=None)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work-dir", default=None,
                   help="accuracy: keep the perturbed copies in this folder (make defaults: build/defaults)")
    p.add_argument("--quick", action="store_true", help="small sizes, to check the code runs (tables marked as quick)")
    args = p.parse_args(argv)
    for name in args.only or SECTIONS:
        mod = importlib.import_module(f"benchmarks.{name}")
        t0 = time.time()
        table = mod.run(args)
        env = (f"\n\n_Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPU cores, "
               f"Python {platform.python_version()}; section took {time.time() - t0:.0f} s"
               f"{' (QUICK run: small sizes)' if args.quick else ''}._")
        write_section(name, f"## {name}\n\n{table.strip()}{env}")
        print(table)


if __name__ == "__main__":
    main()
