-- Argo CD health for shardkeeper Backups and Restores (both kinds share it).
-- Healthy: SUCCESS. Degraded: FAILED. Suspended: CANCELED (it will not complete, by request).
-- Progressing: anything else, and any spec change the operator has not observed yet.
local hs = {}
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick it up"
  return hs
end
if obj.metadata.generation ~= nil and
   (obj.status.observedGeneration == nil or obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local phase = obj.status.phase
if phase == "SUCCESS" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if obj.status.size ~= nil then
    hs.message = "Succeeded: " .. obj.status.size
  end
elseif phase == "FAILED" then
  hs.status = "Degraded"
  hs.message = obj.status.error or "Failed"
elseif phase == "CANCELED" then
  hs.status = "Suspended"
  hs.message = obj.status.error or "Canceled"
else
  hs.status = "Progressing"
  local complete = condition("Complete")
  if complete ~= nil and complete.message ~= nil and complete.message ~= "" then
    hs.message = phase .. ": " .. complete.message
  else
    hs.message = phase
  end
end
return hs
