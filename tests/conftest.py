"""Shared pytest set-up. Fixtures live in tests/fixtures/<area>.py, one module per area."""

pytest_plugins: list[str] = ["fixtures.plugin", "fixtures.spark", "fixtures.cluster", "fixtures.s3", "fixtures.rbac"]
