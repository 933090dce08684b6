-- Argo CD health check for tunegate.dev/EvalGate (resource.customizations.health.tunegate.dev_EvalGate).
-- Healthy once the candidate is promoted (or passed, when nothing is promoted);
-- Suspended while a Pass waits for manual approval; Degraded when the gate refused
-- the candidate, rolled it back, or could not decide.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the tunegate operator"
  return hs
end
local status = obj.status
local phase = status.phase
local reason = nil
if status.decision ~= nil then
  reason = status.decision.reason
end
local function with_reason(text)
  if reason ~= nil and reason ~= "" then
    return text .. ": " .. reason
  end
  return text
end
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not yet seen the latest spec"
elseif phase == "Promoted" or phase == "Passed" or phase == "Superseded" then
  hs.status = "Healthy"
  hs.message = phase
  if status.promoted ~= nil and status.promoted.uri ~= nil then
    hs.message = phase .. ": " .. status.promoted.uri
  end
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "Pass; waiting for approval (kubectl tunegate approve " .. obj.metadata.name .. ")"
elseif phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = with_reason("Fail")
elseif phase == "Held" then
  hs.status = "Degraded"
  hs.message = with_reason("Inconclusive, held")
elseif phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "a scheduled re-evaluation failed; the previous version was restored"
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = with_reason("Error")
else
  hs.status = "Progressing"
  hs.message = phase
end
return hs
