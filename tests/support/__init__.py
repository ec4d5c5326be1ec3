"""Test helpers: fixtures (registered as pytest plugins by tests/conftest.py), paths, configs, servers."""
