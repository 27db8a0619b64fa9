"""The run-directory contract, torch-free: layout, events, control protocol, run lock, checkpoint
index, config schema and presets, dataset recipe keys, and the system sampler.

`hrm.train` writes a run through these modules and `hrm_tui` reads one through them; nothing here
imports torch, numba, `hrm.model` or `hrm.train` (tests/test_import_contract.py checks it).
"""
