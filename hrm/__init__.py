"""HRM-ACT-v1 in plain PyTorch: model, loss, optimizers, datasets, trainer.

Kept import-light on purpose: `hrm.train.config`, `hrm.train.events`, `hrm.train.control` and
`hrm.train.sysmon` are read by the terminal app, which must never load torch.
"""

__version__ = "0.1.0"
