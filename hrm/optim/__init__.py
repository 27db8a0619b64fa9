"""Optimizers for HRM: AdamATan2, the sparse puzzle-embedding SignSGD, the lr schedule and the
container the trainer steps. Import the submodules (`hrm.optim.adam_atan2`, ...); this package
__init__ imports nothing so that `import hrm.optim` stays cheap."""
