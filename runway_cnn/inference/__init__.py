"""Inference: the local Predictor, the TF Serving client and models.config, prediction and
evaluation of folders of photos."""
