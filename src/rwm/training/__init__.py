"""Training: the one on-policy runner (modes are configuration and extensions), checkpoints,
logging, evaluation in the real simulator, and policy export."""

from rwm.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from rwm.training.extension import RunnerExtension
from rwm.training.runner import Runner, TrainingError
from rwm.training.train import resolve_train_config, train

__all__ = ["CheckpointError", "Runner", "RunnerExtension", "TrainingError", "find_checkpoint", "load_checkpoint",
           "resolve_train_config", "save_checkpoint", "train"]
