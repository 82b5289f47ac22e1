-- Argo CD health of a Conveyor Run (conveyor.dev/v1alpha1).
-- Reads the Succeeded condition (what programs should read) and falls back on status.phase:
--   Succeeded=True                        -> Healthy
--   Succeeded=False (Failed or Cancelled) -> Degraded
--   reason WaitingForApproval             -> Suspended (a person must approve or reject a step)
--   anything else (pending, queued, running, retrying) -> Progressing
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

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the Run"
  return hs
end

local phase = obj.status.phase
local succeeded = condition("Succeeded")
local progress = ""
if obj.status.progress ~= nil then
  progress = " (" .. obj.status.progress .. " steps)"
end

if (succeeded ~= nil and succeeded.status == "True") or (succeeded == nil and phase == "Succeeded") then
  hs.status = "Healthy"
  hs.message = explain("Run succeeded" .. progress, succeeded)
elseif phase == "Cancelled" or (succeeded ~= nil and succeeded.status == "False" and succeeded.reason == "Cancelled") then
  hs.status = "Degraded"
  hs.message = explain("Run was cancelled" .. progress, succeeded)
elseif (succeeded ~= nil and succeeded.status == "False") or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain("Run failed" .. progress, succeeded)
elseif succeeded ~= nil and succeeded.reason == "WaitingForApproval" then
  hs.status = "Suspended"
  hs.message = explain("Run is waiting for approval" .. progress, succeeded)
else
  hs.status = "Progressing"
  local reason = ""
  if succeeded ~= nil and succeeded.reason ~= nil and succeeded.reason ~= phase then
    reason = ", " .. succeeded.reason
  end
  hs.message = explain("Run is " .. phase .. reason .. progress, succeeded)
end
return hs
