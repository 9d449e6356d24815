"""Peak memory and run time of each notebook, against Binder's budget.

Binder gives a session at most 2 GB for the notebook server and the kernel together; a notebook
that needs more is killed mid-lesson. This script executes each notebook top to bottom with
nbclient in a child process (so nothing of it stays in this process), samples the resident memory
(RSS) of the kernel process and its children every few milliseconds, and prints the peak with the
run time. The first row is a reference measured the same way: a kernel that only imports torch,
matplotlib and the package, i.e. what any chapter costs before it does anything.

    python benchmarks/notebook_memory.py                      # every notebooks/*.ipynb
    python benchmarks/notebook_memory.py notebooks/01_*.ipynb  # some of them
    python benchmarks/notebook_memory.py --limit-gb 1.5 --interval 0.02

Exit status 1 when a notebook fails to run or goes over the limit. Outputs are not written back.
Figures are RSS sums, so pages shared between processes count twice: a little pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # ships with ipykernel, which every notebook needs

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3
MB = 1024**2

# What the child process runs: execute one notebook with nbclient in the notebook's own folder
# (as nbval and JupyterLab do), the python3 kernel of this environment, no outputs written back.
CHILD = r"""
import sys, nbformat
from nbclient import NotebookClient
path, timeout = sys.argv[1], int(sys.argv[2])
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[3]}})
client.execute()
"""

# The reference: a kernel that imports what every chapter imports, and nothing more.
REFERENCE_CELLS = [
    "import torch\nimport matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
    "import matplotlib.pyplot as plt\nimport perceiver_edu as pe",
    "model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())",
]


def reference_notebook(folder: Path) -> Path:
    cells = [
        {"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None}
        for src in REFERENCE_CELLS
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "reference_imports_only.ipynb"
    path.write_text(json.dumps(nb))
    return path


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of the whole tree under `proc`, RSS of the kernel and its children) in bytes."""
    total = kernel = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    kernels = []
    for p in procs:
        try:
            rss = p.memory_info().rss
            total += rss
            if any("ipykernel" in part for part in p.cmdline()):
                kernels.append(p)
                kernel += rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    # Processes the kernel started (e.g. data-loader workers) count as the kernel's.
    for k in kernels:
        try:
            for child in k.children(recursive=True):
                kernel += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total, kernel


def measure(path: Path, timeout: int, interval: float) -> dict:
    """Run one notebook in a child process; return peak RSS figures, wall time and success."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(timeout), str(path.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = psutil.Process(child.pid)
    peak_total = peak_kernel = 0
    while child.poll() is None:
        total, kernel = tree_rss(proc)
        peak_total = max(peak_total, total)
        peak_kernel = max(peak_kernel, kernel)
        time.sleep(interval)
    seconds = time.perf_counter() - started
    _, stderr = child.communicate()
    return {
        "ok": child.returncode == 0,
        # the last line of nbclient's error is the exception; drop the terminal colour codes
        "error": re.sub(r"\x1b\[[0-9;]*m", "", stderr.strip().splitlines()[-1])
        if child.returncode and stderr.strip()
        else "",
        "seconds": seconds,
        "peak_kernel": peak_kernel,
        "peak_total": peak_total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--limit-gb", type=float, default=1.5, help="budget per notebook (default 1.5)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--interval", type=float, default=0.05, help="sampling period in s (default 0.05)")
    args = parser.parse_args()

    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        print("no notebooks to measure")
        return 1
    limit = args.limit_gb * GB

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, sampling RSS every {args.interval * 1000:.0f} ms")
    print(f"budget per notebook: {args.limit_gb:.2f} GB (Binder allows 2 GB for server + kernel)\n")
    header = f"{'notebook':<34} {'kernel peak':>12} {'x ref':>6} {'all procs':>10} {'% budget':>9} {'time':>7}  verdict"
    print(header)
    print("-" * len(header))

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        ref = measure(reference_notebook(Path(tmp)), args.timeout, args.interval)
    if not ref["ok"]:
        print(f"reference kernel failed: {ref['error']}")
        return 1
    rows = [("(reference: imports only)", ref)]
    print_row(*rows[0], ref["peak_kernel"], limit)
    for path in notebooks:
        result = measure(path.resolve(), args.timeout, args.interval)
        print_row(path.name, result, ref["peak_kernel"], limit)
        failed |= not result["ok"] or result["peak_total"] > limit

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    print(f"\nlargest single process seen by the OS (ru_maxrss of children): {children / MB:.0f} MB")
    print("kernel peak: the IPython kernel and its children; all procs: also the nbclient driver,")
    print("which stands in for the notebook server. The verdict compares 'all procs' with the budget.")
    return 1 if failed else 0


def print_row(name: str, r: dict, reference: int, limit: float) -> None:
    if not r["ok"]:
        verdict = f"FAILED: {r['error'][:60]}"
    else:
        verdict = "under budget" if r["peak_total"] <= limit else "OVER BUDGET"
    print(
        f"{name:<34} {r['peak_kernel'] / MB:>9.0f} MB {r['peak_kernel'] / reference:>6.2f} "
        f"{r['peak_total'] / MB:>7.0f} MB {100 * r['peak_total'] / limit:>8.0f}% {r['seconds']:>6.1f}s  {verdict}"
    )


if __name__ == "__main__":
    sys.exit(main())
