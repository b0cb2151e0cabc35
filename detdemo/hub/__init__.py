"""Publishing to the Hugging Face Hub: the model card, the Space folder, and the upload.

Each module takes plain facts (``ModelFacts``) and writes or sends files; what a model repo holds is decided by
``export.publish``, which knows export folders. Nothing here reaches the network except ``upload``.
"""
