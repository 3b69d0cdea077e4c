"""The Gradio app: the only package that imports gradio.

One module per tab (``concepts``, ``feature``, ``lens``, ``steer``, ``annotate``,
``evaluation``), each with ``render(ctx)`` building its widgets and ``listen(ctx, w)``
wiring its events to plain handler functions over :class:`~ard_core.ui.context.AppContext`.
``app.create_app`` assembles them; ``python app.py --catalog PATH`` launches it.
"""

from ard_core.ui.app import App, create_app, launch

__all__ = ["App", "create_app", "launch"]
