"""The Gradio app's parts: which models it serves (catalogue), what a request does (predict), the page (ui)."""
