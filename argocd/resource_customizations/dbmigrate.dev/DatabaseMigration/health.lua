-- Argo CD health of a dbmigrate.dev DatabaseMigration, read from its kstatus conditions.
--   Healthy      Ready=True, reported for the current metadata.generation
--   Degraded     Stalled=True for the current generation (needs a person: bad config, failed migration),
--                and a plan waiting for approval (Reconciling=True, reason WaitingForApproval): it needs a
--                person too, and Degraded ends the sync at this wave, so the commit carrying
--                approvedPlan can sync (Suspended would hold the sync open and never let it in)
--   Progressing  everything else: no status yet, a stale observedGeneration, a run under way
-- Uses only base functions and `..`, not the string library, which Argo CD's sandbox does not open.
local hs = {}
local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

local function find_condition(kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- The generation a condition speaks for: its own observedGeneration, else the status-wide one.
local function observed_generation(c)
  if c ~= nil and c.observedGeneration ~= nil then
    return c.observedGeneration
  end
  if status ~= nil then
    return status.observedGeneration
  end
  return nil
end

local function is_current(c)
  if generation == nil then
    return true
  end
  local seen = observed_generation(c)
  return seen ~= nil and seen >= generation
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local stalled = find_condition("Stalled")
local reconciling = find_condition("Reconciling")
local ready = find_condition("Ready")

if is_true(stalled) and is_current(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Migration stalled")
  return hs
end

if is_true(reconciling) and reconciling.reason == "WaitingForApproval" and is_current(reconciling) then
  hs.status = "Degraded"
  hs.message = describe(reconciling, "Waiting for approval of the migration plan")
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Migration in progress")
  return hs
end

if is_true(ready) and is_current(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Migrated")
  return hs
end

hs.status = "Progressing"
if not is_current(ready) then
  local seen = observed_generation(ready)
  if seen == nil then
    hs.message = "Waiting for the operator to observe generation " .. generation
  else
    hs.message = "Waiting for the operator to observe generation " .. generation
      .. " (status is for generation " .. seen .. ")"
  end
else
  hs.message = describe(ready, "Waiting for the migration")
end
return hs
