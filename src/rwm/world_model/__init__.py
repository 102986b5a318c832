"""The learned simulator: recurrent dynamics ensemble, its data, training, evaluation and upstream import."""

from rwm.world_model.config import WORLD_MODEL_PAPER_SCALE, WorldModelCfg, paper_scale
from rwm.world_model.evaluation import autoregressive_rollout, evaluate_world_model, format_table
from rwm.world_model.losses import world_model_loss
from rwm.world_model.model import SystemDynamics, WorldModelOutput
from rwm.world_model.replay_buffer import ReplayBuffer
from rwm.world_model.trainer import WorldModelTrainer
from rwm.world_model.upstream import convert_upstream_state_dict, load_upstream_checkpoint, load_upstream_model

__all__ = [
    "ReplayBuffer",
    "SystemDynamics",
    "WORLD_MODEL_PAPER_SCALE",
    "WorldModelCfg",
    "WorldModelOutput",
    "WorldModelTrainer",
    "autoregressive_rollout",
    "convert_upstream_state_dict",
    "evaluate_world_model",
    "format_table",
    "load_upstream_checkpoint",
    "load_upstream_model",
    "paper_scale",
    "world_model_loss",
]
