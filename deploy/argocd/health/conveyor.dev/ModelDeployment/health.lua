-- Argo CD health of a Conveyor ModelDeployment (conveyor.dev/v1alpha1), from its conditions:
--   Ready=True                      -> Healthy
--   Ready=False, Progressing=True   -> Progressing (a rollout is under way)
--   Ready=False (or Degraded=True)  -> Degraded
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
  hs.message = "Waiting for the operator to act on the ModelDeployment"
  return hs
end

local ready = condition("Ready")
local progressing = condition("Progressing")
local degraded = condition("Degraded")
local serving = ""
if obj.status.modelDigest ~= nil then
  serving = " (model " .. obj.status.modelDigest .. ", " .. tostring(obj.status.readyReplicas or 0) .. " ready replicas)"
end

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = explain("ModelDeployment is degraded" .. serving, degraded)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain("Serving" .. serving, ready)
elseif progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = explain("Rolling out" .. serving, progressing)
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain("Not ready (" .. (ready.reason or "NotReady") .. ")" .. serving, ready)
else
  hs.status = "Progressing"
  hs.message = explain("Waiting for the model to be ready" .. serving, ready)
end
return hs
