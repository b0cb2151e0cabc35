"""detdemo's Gradio app, and the entry point of its Hugging Face Space (see ``detdemo.app.main`` for the options).

    python app.py                                   # the bundled models, http://127.0.0.1:7860
    python app.py --model runs/export --backend onnxruntime --port 8080
    python app.py --model USER/NAME@REVISION         # a model repo on the Hugging Face Hub
"""

from __future__ import annotations

import sys

from detdemo.app.main import main, make_demo, parse_args

__all__ = ["main", "make_demo", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
