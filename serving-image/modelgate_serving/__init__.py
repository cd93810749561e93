"""modelgate's scikit-learn model server (console script `modelgate-serve`)."""

__version__ = "0.1.0"
