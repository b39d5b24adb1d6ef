"""synthray: detect AI-generated images and attribute them to their source generator."""

__version__ = "0.1.0"
