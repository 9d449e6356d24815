"""The package's layout: the core knows nothing of what is built around it, and no import goes in a circle."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import perceiver_edu as pe

ROOT = Path(pe.__file__).parent
CORE = ("config", "checks", "steps", "modules", "trace")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every perceiver_edu module `path` imports, at the top or inside a function (run-time imports count)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("perceiver_edu"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("perceiver_edu"):
                target = node.module
            else:
                continue
            # `from . import steps` imports the submodule steps; `from .config import X` imports config
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT.parent / (sub.replace(".", "/") + ".py")).exists() else target)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            found.add("<importlib>")  # a module name built at run time: the graph could not see it
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_the_core_imports_only_the_core():
    edges = graph()
    for name in CORE:
        allowed = {f"perceiver_edu.{c}" for c in CORE}
        assert edges[f"perceiver_edu.{name}"] <= allowed, f"{name} imports {edges[f'perceiver_edu.{name}'] - allowed}"


def test_no_import_cycle_static_or_at_run_time():
    """Imports inside functions count too: they run later, but a cycle through them is still a cycle."""
    edges = graph()
    assert not any("<importlib>" in targets for targets in edges.values()), "a module imports by a computed name"
    # the package's __init__ imports its children; a child importing `perceiver_edu` itself would close a loop
    children = {n: {t for t in ts if t != "perceiver_edu"} for n, ts in edges.items() if n != "perceiver_edu"}
    assert all("perceiver_edu" not in ts for n, ts in edges.items() if n != "perceiver_edu"), "a module imports the top"
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in children.get(node, ()):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in children:
        if node not in state:
            visit(node, [node])


def test_the_model_class_has_no_reference_named_methods():
    named = [n for n in dir(pe.PerceiverResampler) if any(r in n for r in ("idefics", "flamingo"))]
    assert named == [], "converters live in perceiver_edu.interop"
    assert callable(pe.interop.from_idefics) and callable(pe.interop.to_idefics2)


# One fresh interpreter answers the three run-time questions below (each start costs a torch import).
PROBE = """
import json, sys, torch
heavy = ("scipy", "safetensors", "matplotlib", "ipywidgets")
ours = lambda: {m for m in sys.modules if m.startswith("perceiver_edu")}
found = {}
import perceiver_edu as pe
found["heavy_after_import"] = sorted(m for m in heavy if m in sys.modules)
loaded = ours()
model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
model(torch.randn(1, 5, 32), return_trace=True)
found["loaded_by_forward"] = sorted(ours() - loaded)
pe.pretrained("digits")  # safetensors for the weights; the digits task needs no scipy
found["heavy_after_pretrained"] = sorted(m for m in heavy if m in sys.modules)
import perceiver_edu.explorer.forward  # binds the submodule `pretrained` on the package: the function must win
found["pretrained_is_the_function"] = callable(pe.pretrained) and pe.pretrained.__name__ == "pretrained"
found["held_out_scenes_from"] = pe.held_out_scenes.__module__
found["all_names_resolve"] = all(getattr(pe, n) is not None for n in pe.__all__)
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_running_the_core_imports_nothing_more(probe):
    """A forward pass loads no module of the package that `import perceiver_edu` did not."""
    assert probe["loaded_by_forward"] == []


def test_import_stays_light_until_a_name_is_used(probe):
    """`import perceiver_edu` loads no scipy, safetensors, matplotlib or ipywidgets; using a name loads its module."""
    assert probe["heavy_after_import"] == []
    assert probe["heavy_after_pretrained"] == ["safetensors"]
    assert probe["pretrained_is_the_function"] and probe["held_out_scenes_from"] == "perceiver_edu.scenes"


def test_every_public_name_resolves(probe):
    assert probe["all_names_resolve"]
