-- Argo CD health of a modelgate.dev/ModelDeployment (docs/architecture.md, contract 6).
-- It reads the same conditions Flux and kubectl wait read (kstatus), so the tools agree:
--   a spec the operator has not yet observed (no status, or metadata.generation newer than
--   status.observedGeneration)                      -> Progressing
--   Stalled=True: phase Paused (held for a person)  -> Suspended
--                 RolledBack, Degraded              -> Degraded
--   Reconciling=True (Pending, Progressing)         -> Progressing
--   Ready=True (Healthy)                            -> Healthy
--   otherwise (Healthy, stable pods missing)         -> Progressing
-- A status without Reconciling and Stalled (written by an older operator) maps its phase: Healthy ->
-- Healthy; Progressing, Pending -> Progressing; Paused -> Suspended; RolledBack, Degraded ->
-- Degraded. The status message is passed through.
local hs = {}
local phases = {
  Healthy = "Healthy",
  Progressing = "Progressing",
  Pending = "Progressing",
  Paused = "Suspended",
  RolledBack = "Degraded",
  Degraded = "Degraded",
}

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelgate operator to observe the ModelDeployment"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelgate operator to observe the new spec"
  return hs
end

local phase = obj.status.phase
if phases[phase] == nil then
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type ~= nil then
      conditions[condition.type] = condition.status
    end
  end
end

hs.message = obj.status.message or ""
if conditions["Stalled"] == nil and conditions["Reconciling"] == nil then
  hs.status = phases[phase]
elseif conditions["Stalled"] == "True" then
  if phase == "Paused" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
elseif conditions["Reconciling"] == "True" then
  hs.status = "Progressing"
elseif conditions["Ready"] == "True" then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
return hs
