"""HRM-ACT-v1 in plain PyTorch: model, loss, optimizers, datasets, trainer.

Kept import-light on purpose: `hrm.run.config`, `hrm.run.events`, `hrm.run.control` and
`hrm.run.sysmon` are read by the terminal app, which must never load torch.
"""

__version__ = "0.1.0"
