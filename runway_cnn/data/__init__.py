"""Data: image-folder and CSV sources, image checks and conversion, splits, and the tf.data
input pipelines with their preprocessing."""
