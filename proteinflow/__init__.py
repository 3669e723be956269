"""proteinflow: Riemannian flow matching on protein backbones."""

__version__ = "0.1.0"
