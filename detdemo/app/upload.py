"""An image input that leaves decoding to detdemo.

Gradio writes a ``.pyi`` stub next to the module of any component subclass it sees (upload.pyi, git-ignored);
keeping the class alone in this module keeps that stub from shadowing the rest of the app's code.
"""

from __future__ import annotations

import gradio as gr


class ImageUpload(gr.Image):
    """gr.Image that passes the uploaded file on undecoded, so a broken upload gets detdemo's message.

    gr.Image opens every upload with Pillow before the handler runs, so a text file or a truncated JPEG would fail
    inside Gradio with Pillow's exception. ``is_template`` keeps gr.Image's front end.
    """

    is_template = True

    def preprocess(self, payload):
        if payload is None or getattr(payload, "path", None) is None:
            return super().preprocess(payload)  # base64 data URLs: Gradio's own decoding
        return str(payload.path)
