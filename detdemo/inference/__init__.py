"""The one prediction path shared by every caller: ``Detections``, the ``Predictor`` interface, the host pipeline
and the eager runtime. Exported runtimes (``export.runtime``) plug into the same pipeline."""
