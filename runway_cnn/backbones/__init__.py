"""Backbones: the nets factory (registry of Keras applications, TF-Hub handles, converted
EfficientNet-Lite checkpoints, previous runs), TF-Hub SavedModels as Keras layers, and the offline
EfficientNet-Lite conversion."""
