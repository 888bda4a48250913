"""The artlens Space, as a Hugging Face Space runs it (``python app.py``). The app is
``artlens.space.build_app``; flags: ``python spaces/artlens/app.py --help`` (= ``artlens space``).
artlens comes from the install (``pip install -e .`` in a clone) or from a copy beside this file."""
import sys

from artlens.space import build_app, main

if __name__ == "__main__":
    sys.exit(main())  # the flags, or on a Space none: embedded models, host and port from GRADIO_SERVER_*
else:
    demo = build_app()  # for `gradio app.py` (reload mode) and importers
