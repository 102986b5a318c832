"""Training: the one on-policy runner (modes are configuration and extensions), checkpoints,
logging, evaluation in the real simulator, and policy export."""

from rwm.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from rwm.training.runner import Runner, RunnerExtension, TrainingError, resolve_train_config, train

__all__ = ["CheckpointError", "Runner", "RunnerExtension", "TrainingError", "find_checkpoint", "load_checkpoint",
           "resolve_train_config", "save_checkpoint", "train"]
