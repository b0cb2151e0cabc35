"""An image input that leaves decoding to detdemo, whichever way the image arrives.

Gradio writes a ``.pyi`` stub next to the module of any component subclass it sees (upload.pyi, git-ignored);
keeping the class alone in this module keeps that stub from shadowing the rest of the app's code.
"""

from __future__ import annotations

import base64
import binascii

import gradio as gr

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the app's upload limit (app.py passes the same to launch)


class ImageUpload(gr.Image):
    """gr.Image whose uploads reach detdemo's decoder undecoded.

    gr.Image opens every upload with Pillow before the handler runs, so a text file or a truncated JPEG would fail
    inside Gradio with Pillow's exception; and a base64 data URL (what API clients may send) would be decoded by
    Gradio itself, past the upload size limit, with lossy re-encoding and wrong results for 16-bit images. Here a
    file upload is passed on as its path and a data URL as a PIL image decoded by ``detdemo.data.images``, after
    the same size limit. ``is_template`` keeps gr.Image's front end.
    """

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return None
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:"):
            return decode_data_url(url)
        if getattr(payload, "path", None) is None:
            raise gr.Error("No image received: send a file or a data:image/...;base64 URL.", print_exception=False)
        return str(payload.path)


def decode_data_url(url: str):
    from detdemo.data.images import decode_bytes
    from detdemo.errors import DetDemoError

    header, sep, data = url.partition(",")
    if not sep or ";base64" not in header:
        raise gr.Error("Image data URL must be base64-encoded (data:image/...;base64,...).", print_exception=False)
    if len(data) * 3 // 4 > MAX_UPLOAD_BYTES:
        raise gr.Error(f"Image data is {len(data) * 3 / 4 / 2**20:.0f} MB, over the "
                       f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB upload limit.", print_exception=False)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise gr.Error("Image data URL is not valid base64.", print_exception=False) from None
    try:
        return decode_bytes(raw, "uploaded image data")
    except DetDemoError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
