"""The test helpers live in tests/support/; their fixtures are registered here as plugins."""

pytest_plugins = ["support.fixtures", "support.hub"]
