"""Similar-image retrieval on learned features: "a photo in, matching items out".

:func:`build_image_index` embeds every image under a folder with a model — an export or a train
dir (its backbone's pooled features, as the ``embed`` signature gives them) or a backbone registry
name (plain ImageNet features) — L2-normalises the embeddings and writes an index folder.
``append`` embeds only images not yet in the index. :func:`query_image_index` gives each photo's
top-k items by cosine similarity, exactly or with FAISS; :func:`evaluate_image_index` measures
recall@k and mAP@10, a hit being the same label (or item id).

One job per module: ``embedder`` (model → embeddings of image files), ``store`` (the index
folder on disk: build, read, check), ``searcher`` (exact and FAISS nearest neighbours),
``query`` (similar items of photos) and ``evaluation`` (recall of queries against an index).
"""
from runway_cnn.inference.retrieval.embedder import embed_files, load_embedder, normalise
from runway_cnn.inference.retrieval.evaluation import RECALL_AT, evaluate_image_index
from runway_cnn.inference.retrieval.query import SimilarItems, query_image_index
from runway_cnn.inference.retrieval.searcher import (
    AUTO_FAISS_FROM,
    AUTO_FAISS_QUERIES,
    BACKENDS,
    Searcher,
    faiss_available,
    search,
)
from runway_cnn.inference.retrieval.store import (
    EMBEDDINGS,
    FORMAT,
    INDEX_JSON,
    OWN_FILES,
    ImageIndex,
    build_image_index,
)

__all__ = ["AUTO_FAISS_FROM", "AUTO_FAISS_QUERIES", "BACKENDS", "EMBEDDINGS", "FORMAT",
           "INDEX_JSON", "OWN_FILES", "RECALL_AT", "ImageIndex", "Searcher", "SimilarItems",
           "build_image_index", "embed_files", "evaluate_image_index", "faiss_available",
           "load_embedder", "normalise", "query_image_index", "search"]
