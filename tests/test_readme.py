"""The README stays true: its first Python example runs, its pictures and chapter links exist."""

import re
from pathlib import Path

import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_python_example_runs_and_its_comments_are_right():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert tuple(namespace["latents"].shape) == (1, 8, 64)
    assert tuple(namespace["trace"].attentions[0].shape) == (1, 4, 8, 265)
    assert namespace["fig"].axes and not plt.get_fignums()


def test_local_links_and_pictures_exist():
    targets = re.findall(r"\]\(((?:notebooks|perceiver_edu|tests|benchmarks|binder)/[^)\s]+)\)", README)
    assert any(t.endswith(".png") for t in targets)
    for target in targets:
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_every_notebook_is_listed_as_a_chapter():
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.name}" in README, f"{notebook.name} is missing from the README's chapters"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in README and "<!-- test-command -->" in ci
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README, re.S).group(1)
    assert command.startswith("python3 -m venv .venv") and command.endswith("python -m pytest")
