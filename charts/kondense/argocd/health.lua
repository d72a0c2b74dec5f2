-- Argo CD health of a kondense.dev CompressionJob, from the kstatus conditions the operator
-- writes (operator/status.py): Stalled=True is Degraded (failed, or stuck until someone fixes
-- the cause), Ready=True is Healthy, anything else Progressing. A generation the operator has
-- not observed yet is Progressing, whatever the older status says. The message is the
-- status's: "PHASE (REASON): MESSAGE".
-- Only Lua's base library: Argo CD runs argocd-cm health checks without the open libraries.
local hs = { status = "Progressing", message = "waiting for the kondense operator" }
local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.message = "waiting for the kondense operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition.status
end
if conditions["Stalled"] == "True" then
  hs.status = "Degraded"
elseif conditions["Ready"] == "True" then
  hs.status = "Healthy"
end
local phase = status.phase or "Unknown"
local reason = status.reason or ""
if reason ~= "" and reason ~= phase then
  phase = phase .. " (" .. reason .. ")"
end
hs.message = phase .. ": " .. (status.message or "")
return hs
