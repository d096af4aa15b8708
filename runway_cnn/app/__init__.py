"""A local web page and JSON API over exports: a photo in, every model's answer, similar catalog
items and its place on the attribute map out (``python -m runway_cnn.app``). Needs the ``[app]``
extra (FastAPI, uvicorn, python-multipart)."""
