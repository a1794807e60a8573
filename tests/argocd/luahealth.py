"""Run an Argo CD health script the way Argo CD's controller does, on a real Lua 5.1 interpreter.

Argo CD (gopher-lua, Lua 5.1) opens only the base, table and package libraries and a reduced
``os``; the object is the global ``obj`` and the script returns ``{status, message}``. We mirror
that closely enough that a script which works here works there: no ``string`` library, no ``io``,
string methods (``("x"):sub``) unavailable, unknown statuses mapped to ``Unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lupa.lua51

VALID_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
INVALID_STATUS_MESSAGE = "Lua returned an invalid health status"

_SANDBOX = """
function(source, obj)
  local env = {
    obj = obj, assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, print = print, rawequal = rawequal, rawget = rawget, rawset = rawset,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    getmetatable = getmetatable, setmetatable = setmetatable, table = table,
    os = {time = os.time, clock = os.clock, date = os.date},
  }
  env._G = env
  -- gopher-lua without its string library gives strings no methods
  getmetatable("").__index = nil
  local chunk, err = loadstring(source, "=health.lua")
  if chunk == nil then
    error(err)
  end
  setfenv(chunk, env)
  return chunk()
end
"""


@dataclass(frozen=True)
class HealthStatus:
    status: str
    message: str = ""


def run_health_script(source: str, obj: dict[str, Any]) -> HealthStatus:
    """Evaluate ``source`` against the Kubernetes object ``obj`` (a fresh interpreter per call)."""
    runtime = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    run = runtime.eval(_SANDBOX)
    result = run(source, runtime.table_from(obj, recursive=True))
    if lupa.lua51.lua_type(result) != "table":
        raise TypeError(f"expect table output from Lua script, not {lupa.lua51.lua_type(result) or result!r}")
    status, message = result["status"], result["message"]
    if status not in VALID_STATUSES:
        return HealthStatus("Unknown", INVALID_STATUS_MESSAGE)
    return HealthStatus(str(status), "" if message is None else str(message))
