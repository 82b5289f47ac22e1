-- Argo CD health of a Conveyor Pipeline (conveyor.dev/v1alpha1), from its Ready condition:
--   Ready=True  -> Healthy (Suspended when its schedule is suspended, like a suspended CronJob)
--   Ready=False -> Degraded (the spec is invalid; the message names the field)
--   no verdict on the current generation yet -> Progressing
-- Argo CD runs custom health scripts without Lua's string library: only plain concatenation here.
local hs = {}

local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function explain(text, c)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return text .. ": " .. c.message
  end
  return text
end

local generation = obj.metadata.generation
if obj.status == nil or (generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation)) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the Pipeline"
  return hs
end

local ready = condition("Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = explain("Waiting for the operator to validate the Pipeline", ready)
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain("Pipeline is not valid (" .. (ready.reason or "NotReady") .. ")", ready)
elseif obj.spec ~= nil and obj.spec.schedule ~= nil and obj.spec.schedule.suspend == true then
  hs.status = "Suspended"
  hs.message = "Pipeline is valid; its schedule is suspended"
else
  hs.status = "Healthy"
  hs.message = "Pipeline is valid"
end
return hs
