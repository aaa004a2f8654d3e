"""The one version string of segd (pyproject reads it; ``segd.__version__`` re-exports it)."""

__version__ = "0.1.0"
