"""modelgate: progressive delivery of scikit-learn models on Kubernetes."""

__version__ = "0.1.0"
