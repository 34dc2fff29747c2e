"""medsweep: config-composed experiment suite for image classification studies."""

__version__ = "0.1.0"
