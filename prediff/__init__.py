"""prediff: probabilistic Earth-system forecasting with latent diffusion and cuboid attention."""

__version__ = "0.1.0"
