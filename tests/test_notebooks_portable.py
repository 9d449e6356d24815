"""The checked notebook outputs hold on any CPU: no `# NBVAL_CHECK_OUTPUT` cell prints or measures a time.

A time differs from run to run and machine to machine, so a checked cell that printed one would fail
nbval everywhere but on the machine that stored it. (Figures of a training run differ across CPUs too:
those are checked by running the notebooks under other instruction sets, see the README's testing section.)
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# a number followed by a unit of time: "12.3 ms", "4 s", "0.5 seconds", "250 µs" (not "s = 257")
TIME_PRINTED = re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|µs|us|ns|s|sec|secs|seconds?|minutes?)\b(?! ?=)")
# code that measures time
TIME_MEASURED = re.compile(r"perf_counter|process_time|time\.time\(|timeit|time_interleaved|torch\.utils\.benchmark")


def checked_cells(path: Path):
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.lstrip().startswith("# NBVAL_CHECK_OUTPUT"):
            yield index, source, cell.get("outputs", [])


def printed_text(outputs) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append("".join(output["text"]))
        else:
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def time_problems(source: str, printed: str) -> list[str]:
    """What in a checked cell speaks of time: the code that measures it, or a printed duration."""
    problems = [f"measures time ({m.group(0)})" for m in TIME_MEASURED.finditer(source)]
    problems += [f"prints a time ({m.group(0)!r})" for m in TIME_PRINTED.finditer(printed)]
    return problems


def test_the_detector_finds_times_and_leaves_other_numbers_alone():
    assert time_problems("t = time.perf_counter()", "")
    assert time_problems("", "forward: 12.3 ms")
    assert time_problems("", "trained in 41 s of CPU")
    assert time_problems("", "took 2 minutes")
    assert time_problems("", "median 0.25 s")
    assert not time_problems("print(x.shape)", "q (2, 8, 32)  k (2, 18, 32)")
    assert not time_problems("", "s =    257: total     29.0 GFLOP; 3 x 64 = 192 latents; 10 min of video; (1, s)")
    assert not time_problems("", "object accuracy  96.5 %   exact set  76.8 %; 2-4 digits; b = 8")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_checked_cell_prints_or_measures_a_time(path):
    found = {
        index: problems
        for index, source, outputs in checked_cells(path)
        if (problems := time_problems(source, printed_text(outputs)))
    }
    assert not found, f"{path.name}: checked cells that depend on time (cell index: what): {found}"


def test_every_chapter_has_checked_cells():
    assert NOTEBOOKS and all(any(True for _ in checked_cells(path)) for path in NOTEBOOKS)
