"""The package's layout: the core knows nothing of what is built around it, and no import goes in a circle."""

import ast
import subprocess
import sys
from pathlib import Path

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


def test_running_the_core_imports_nothing_more():
    """A forward pass after `import perceiver_edu.modules` loads no module of the package outside the core."""
    code = (
        "import sys, torch\n"
        "before = {m for m in sys.modules if m.startswith('perceiver_edu')}\n"
        "import perceiver_edu as pe\n"
        "loaded = {m for m in sys.modules if m.startswith('perceiver_edu')}\n"
        "model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())\n"
        "model(torch.randn(1, 5, 32), return_trace=True)\n"
        "print(sorted({m for m in sys.modules if m.startswith('perceiver_edu')} - loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_stays_light_until_a_name_is_used():
    """`import perceiver_edu` loads no scipy, safetensors, matplotlib or ipywidgets; using a name loads its module."""
    heavy = ("scipy", "safetensors", "matplotlib", "ipywidgets")
    code = (
        "import sys\n"
        "import perceiver_edu as pe\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "pe.pretrained('digits')\n"  # safetensors for the weights; the digits task needs no scipy
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "import perceiver_edu.explorer.forward  # binds the submodule `pretrained`: the function must win\n"
        "print(callable(pe.pretrained) and pe.pretrained.__name__ == 'pretrained', pe.held_out_scenes.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == "['safetensors']"
    assert out[2] == "True perceiver_edu.scenes"


def test_every_public_name_resolves():
    code = "import perceiver_edu as pe\nprint(all(getattr(pe, n) is not None for n in pe.__all__))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
