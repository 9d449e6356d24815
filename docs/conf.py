"""Sphinx settings of the book. Build it with `python docs/build.py` (see that file and the README).

docs/build.py prepares the sources (the README's introduction as the front page, the stored notebooks
with their widget outputs replaced by still pictures) and runs Sphinx with this file as its config.
The notebooks are never executed: `nb_execution_mode = "off"`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import links  # noqa: E402  (the repository address, in pyproject.toml only)

project = "perceiver-edu"
author = "the perceiver-edu authors"
copyright = "the perceiver-edu authors, MIT licence"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# The stored, executed notebooks are the book: never run them again here.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]  # the chapters, not the book, choose their headings

# Maths: MathJax 2 from the jupyter-server-mathjax package, copied into the book by docs/build.py
# (the readers of a book built offline may be offline too: no CDN). That package ships the HTML-CSS
# output with the STIX-Web fonts (the set classic Jupyter used), so the config asks for exactly those.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "MMLorHTML": {"prefer": "HTML"},  # Chromium has MathML now; its fonts would be missing
    # the hidden MathML copy for screen readers would ask for the TeX fonts, not shipped
    "menuSettings": {"assistiveMML": False},
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
    # myst marks sections "tex2jax_ignore" (a stray $ in prose is not maths); its maths
    # and the notebooks' outputs carry the classes that MathJax must process anyway
    "tex2jax": {
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore",
    },
    "showMathMenu": False,
    "messageStyle": "none",
}

pygments_style = "sphinx"
html_title = "perceiver-edu: the Perceiver Resampler, step by step"
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_last_updated_fmt = None
html_theme_options = {
    "repository_url": links.repository_url(),
    "repository_branch": links.BRANCH,
    "path_to_docs": "",  # the book's sources mirror the repository: notebooks/NAME.ipynb is the file
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
