"""``python -m runway_cnn.audit``: look at a dataset before trusting a figure.

On the frozen backbone's features (one feature pass, cached in the output dir; a second audit
takes seconds): exact duplicates (file digest) and near duplicates (feature cosine, checked with
a perceptual hash), within and across splits; likely label errors (confident learning on
out-of-fold probabilities of a cross-validated logistic regression); outliers; classes the
features cannot separate; and, with ``--group_by``, whether the group is easier to predict than
the label. See :func:`audit_dataset`.
"""
__all__ = ["AuditConfig", "audit_dataset"]


def __getattr__(name: str):
    """The names above, imported on first use (``python -m runway_cnn.audit`` imports this
    package before its ``__main__``: no TensorFlow yet, so a Ctrl-C then is one line)."""
    if name == "AuditConfig":
        from runway_cnn.audit.config import AuditConfig
        return AuditConfig
    if name == "audit_dataset":
        from runway_cnn.audit.run import audit_dataset
        return audit_dataset
    raise AttributeError(f"module 'runway_cnn.audit' has no attribute {name!r}")
