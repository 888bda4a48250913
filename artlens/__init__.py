"""artlens: which style, which artist, human or AI, and what the model looked at."""
__version__ = "0.1.0"
