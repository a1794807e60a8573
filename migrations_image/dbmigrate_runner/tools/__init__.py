"""The two migration tools behind one small protocol; their modules import tortoise/aerich lazily."""

from __future__ import annotations

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.tools.base import MigrationTool


def get_tool(name: str) -> MigrationTool:
    if name == "aerich":
        from dbmigrate_runner.tools.aerich import AerichTool

        return AerichTool()
    if name == "tortoise":
        from dbmigrate_runner.tools.tortoise import TortoiseTool

        return TortoiseTool()
    raise ConfigError(f"unknown tool {name!r}")


__all__ = ["MigrationTool", "get_tool"]
