"""The saesteer demo: a Gradio app to steer, erase and explain SAE features in a browser.

Installed as ``saesteer.demos`` (like ``adapters/`` as ``saesteer.adapters``); ``demos/app.py`` is the
entry point, started by ``saesteer demo`` or ``python demos/app.py``. Nothing here reaches the network:
Gradio's analytics are switched off before Gradio is imported, and the page uses system fonts.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
