"""ttscale: composable test-time scaling for Mixture-of-Experts language models."""

__version__ = "0.1.0"
