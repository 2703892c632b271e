"""The training stage: a ``TrainingSet`` and the lock → a fitted model and its bundle.

Changes when how the model is fitted changes: the LightningModule and its objective
(``module.py``), the DataModule and the grouped datasets (``datamodule.py``), the seeded,
resumable batch order (``sampling.py``), optimizers and schedules (``optim.py``), the Trainer,
its callbacks and logger from ``[execution]`` (``trainer.py``), ``fit`` and the run's training
record (``fit.py``), requested vs effective settings (``effective.py``), checkpoint I/O
(``checkpoints.py``), exact resume points (``resume.py``) and the model bundle
(``bundle.py``).
"""
