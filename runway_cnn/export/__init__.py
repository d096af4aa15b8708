"""Export: SavedModels for TF Serving (signatures, warm-up, versions) and TFLite files."""
