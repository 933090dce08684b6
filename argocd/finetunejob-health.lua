-- Argo CD health check for tunegate.dev/FineTuneJob (resource.customizations.health.tunegate.dev_FineTuneJob).
-- The operator writes only status, so Argo CD never has to ignore drift in spec.
local hs = {}
local function message_of(status, fallback)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.status ~= "True" and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  return fallback
end
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the tunegate operator"
  return hs
end
local status = obj.status
local phase = status.phase
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not yet seen the latest spec"
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "adapter written"
  if status.adapter ~= nil and status.adapter.uri ~= nil then
    hs.message = "adapter at " .. status.adapter.uri
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of(status, "the fine-tune failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "suspended (spec.runPolicy.suspend)"
elseif phase == "Queued" then
  -- Waiting for Kueue's admission is progress the cluster owes, not a pause.
  hs.status = "Progressing"
  hs.message = "queued for Kueue admission"
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == "Queued" and c.message ~= nil and c.message ~= "" then
        hs.message = c.message
      end
    end
  end
else
  hs.status = "Progressing"
  hs.message = phase
  if status.progress ~= nil and status.progress.step ~= nil then
    hs.message = phase .. ": step " .. tostring(status.progress.step)
    if status.progress.totalSteps ~= nil then
      hs.message = hs.message .. "/" .. tostring(status.progress.totalSteps)
    end
  end
end
return hs
