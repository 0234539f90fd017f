"""Training core: the state and pure step, optimizers from config, the loop, checkpoints and metrics."""

from core.train.checkpoint import Checkpointer
from core.train.loop import NonFiniteLossError, jit_on_mesh, run_training, train_config, validate_train_config
from core.train.metrics import MetricsWriter, read_metrics
from core.train.optim import make_optimizer, optimizer_config, validate_optimizer_config
from core.train.state import TrainState, create_train_state, make_train_step, model_from_state, split_model

__all__ = [
    "Checkpointer", "MetricsWriter", "NonFiniteLossError", "TrainState", "create_train_state", "jit_on_mesh",
    "make_optimizer", "make_train_step", "model_from_state", "optimizer_config", "read_metrics",
    "run_training", "split_model", "train_config", "validate_optimizer_config", "validate_train_config",
]
