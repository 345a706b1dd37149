"""harness: experiment tracking and hyperparameter search for PyTorch image segmentation."""

__version__ = "0.1.0"
