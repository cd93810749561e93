-- Argo CD health of a modelgate.dev/ModelDeployment (docs/architecture.md, contract 6).
-- Healthy -> Healthy; Progressing, Pending -> Progressing; Paused -> Suspended;
-- RolledBack, Degraded -> Degraded; the status message is passed through. As Argo CD's own
-- checks for progressive-delivery resources do, a spec the operator has not yet observed
-- (no status, or metadata.generation newer than status.observedGeneration) is Progressing.
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

local health = phases[obj.status.phase]
if health == nil then
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(obj.status.phase)
  return hs
end
hs.status = health
hs.message = obj.status.message or ""
return hs
