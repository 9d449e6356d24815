"""The explorer: change a Perceiver Resampler's architecture and watch where its latents look.

    explorer = pe.Explorer()          # the last expression of a cell shows the whole UI
    explorer.controls["depth"].value = 6
    explorer.set(depth=6, qk_norm=True)   # several controls at once, one forward pass

Small modules, one job each, with the arrows pointing down:

    widget.py   the ipywidgets UI and its controller: controls, layout, what a change costs
    views.py    the registry of views (tabs): one entry per view, with its title, size, what it
                depends on and how it draws; adding a view is adding one entry
    render.py   Figure -> PNG bytes, and the blitting that redraws one map in a few ms
    view.py     the client-side view: traces -> the data view.js draws (self-contained HTML, or an
                anywidget that a kernel sends new tensors); view.js: the drawing, in the browser
    forward.py  the forward pass the explorer runs, without ipywidgets (benchmarks import only this)

`import perceiver_edu.explorer.forward` does not import ipywidgets or matplotlib: the widget is
loaded only when `Explorer` is first asked for.
"""


def __getattr__(name):
    if name == "Explorer":
        from .widget import Explorer

        return Explorer
    if name == "AttentionView":
        from .view import AttentionView

        return AttentionView
    raise AttributeError(f"module 'perceiver_edu.explorer' has no attribute {name!r}")


__all__ = ["AttentionView", "Explorer"]
