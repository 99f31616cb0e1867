"""Training MooER models: config, model setup, schedule, loop, checkpoints, export and engines.

Entry points: ``mooer train --config FILE [key=value ...]`` (:mod:`mooer.cli.train`) or, from Python::

    from mooer.training import load_config, train
    result = train(load_config("conf.yaml", ["optim.lr=3e-4"]))

Modules: :mod:`~mooer.training.config` (the config tree), :mod:`~mooer.training.model` (building the model
to train), :mod:`~mooer.training.schedule` (LR schedules), :mod:`~mooer.training.engines` (single / DDP /
DeepSpeed), :mod:`~mooer.training.resume` (training state for exact resume), :mod:`~mooer.training.trainer`
(the :class:`~mooer.training.trainer.Trainer` and its loop), :mod:`~mooer.training.validation` (dev loss,
token accuracy, decode metrics), :mod:`~mooer.training.export` (official layout and mooer format).
"""

from mooer.training.config import Config, apply_override, load_config

__all__ = ["Config", "apply_override", "load_config", "train"]


def train(config: Config):
    """Run a training job (see :func:`mooer.training.trainer.train`)."""
    from mooer.training.trainer import train as _train

    return _train(config)
