"""rwm: the Robotic World Model and model-based locomotion learning on a CPU."""

__version__ = "0.1.0"
