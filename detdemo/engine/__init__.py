"""Training, evaluation and prediction engines."""
