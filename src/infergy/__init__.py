"""infergy: measure and model the energy of large-language-model inference."""

__version__ = "0.1.0"
