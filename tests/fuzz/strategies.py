"""Hypothesis strategies for Conveyor documents: Pipelines (valid and broken), Runs and ModelDeployments.

Test harness code. A generated pipeline is a random DAG of container steps (and now and then a
built-in component) whose inputs point at earlier steps, later steps, unknown steps or the step
itself; parameters with defaults of the right or a wrong type; templates that name real, unknown
or malformed variables; random `when` conditions, retries, timeouts (negative ones included),
fan-outs and unknown extra fields. `valid_pipelines()` keeps to the rules so that a useful share
of its documents plan; `pipelines()` breaks them on purpose.
"""

from __future__ import annotations

import copy
import string
from typing import Any

from hypothesis import strategies as st

API_VERSION = "conveyor.dev/v1alpha1"
Doc = dict[str, Any]

STEP_NAMES = ["a", "b", "c", "d", "e", "f", "prep", "train", "x-1"]
EXIT_STEP_NAMES = ["notify", "cleanup", "z-1"]
BAD_STEP_NAMES = ["", "A", "under_score", "-lead", "trail-", "x" * 64, "dot.ted", "é"]
PARAM_NAMES = ["k", "n", "rate", "flag", "xs", "name_1"]
BAD_IDENTIFIERS = ["", "1x", "with-dash", "sp ace", "ü"]
OUTPUT_NAMES = ["out", "model", "data", "o2"]
COMPONENTS = ["ingest", "validate", "split", "train", "evaluate", "gate", "nope", "trian"]
PARAM_TYPES = ["string", "integer", "number", "boolean", "list"]

EXTRA_KEYS = st.sampled_from(["extra", "imagePullPolicy", "retry", "Steps", "x"])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(string.ascii_letters, max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Anything YAML could hand the parser: including non-mappings and non-string keys.
any_yaml = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=4),
    ),
    max_leaves=12,
)

VALUE_OF_TYPE = {
    "string": st.text(string.ascii_letters + string.digits, max_size=6),
    "integer": st.integers(-5, 50),
    "number": st.one_of(st.integers(-5, 50), st.floats(-5, 50, allow_nan=False)),
    "boolean": st.booleans(),
    "list": st.lists(st.integers(0, 9), min_size=0, max_size=3),
}


def _template_texts(params: list[str], inputs: list[str], outputs: list[str], good: bool) -> st.SearchStrategy[str]:
    """Command words: literals and {{ ... }} references that resolve (good) or may not."""
    refs = ["{{ run.name }}", "{{ run.id }}", *[f"{{{{ params.{p} }}}}" for p in params]]
    refs += [f"{{{{ inputs.{i} }}}}" for i in inputs] + [f"{{{{ outputs.{o} }}}}" for o in outputs]
    bad = [
        "{{ params.missing }}",
        "{{ nope.x }}",
        "{{ item }}",
        "{{ inputs }}",
        "{{ 1 + 1 }}",
        "{{ }}",
        "{{ run.zzz }}",
    ]
    literal = st.text(string.ascii_letters + " -=./", max_size=10)
    choices = refs if good else refs + bad
    return st.one_of(
        literal, st.sampled_from(choices), st.builds(lambda a, b: f"{a}{b}", literal, st.sampled_from(choices))
    )


WHEN_GOOD = ["true", "false", "params.flag", "params.k > 3", "steps.{up}.phase == 'Succeeded'", "1 == 1"]
WHEN_BAD = [
    "1 +",
    "foo.bar",
    "params.nope == 1",
    "steps.zzz.phase == 'x'",
    "'text'",
    "params.k",
    "(",
    'steps["a"].metrics.m > 0.5',
]


@st.composite
def _parameters(draw: st.DrawFn, good: bool) -> list[Doc]:
    names = draw(st.lists(st.sampled_from(PARAM_NAMES), max_size=4, unique=good))
    if not good and draw(st.booleans()):
        names = [*names, *draw(st.lists(st.sampled_from(PARAM_NAMES + BAD_IDENTIFIERS), max_size=2))]
    params = []
    for name in names:
        ptype = "boolean" if name == "flag" else "list" if name == "xs" else draw(st.sampled_from(PARAM_TYPES))
        if good and name in ("flag", "k"):
            ptype = {"flag": "boolean", "k": "integer"}[name]
        p: Doc = {"name": name, "type": ptype}
        if good:
            p["default"] = draw(VALUE_OF_TYPE[ptype])
        else:
            mode = draw(st.sampled_from(["right", "wrong", "none", "badtype"]))
            if mode == "right":
                p["default"] = draw(VALUE_OF_TYPE[ptype])
            elif mode == "wrong":
                p["default"] = draw(json_values)
            elif mode == "badtype":
                p["type"] = draw(st.sampled_from(["int", "float", "", "List", 3]))
        params.append(p)
    return params


@st.composite
def _step(draw: st.DrawFn, index: int, names: list[str], params: list[str], good: bool) -> Doc:
    name = names[index]
    earlier = names[:index]
    step: Doc = {"name": name}
    inputs: list[Doc] = []
    for k in range(draw(st.integers(0, 2))):
        target_kind = draw(
            st.sampled_from(
                ["earlier", "earlier", "uri"] if good else ["earlier", "later", "unknown", "self", "uri", "broken"]
            )
        )
        iname = f"in{k}"
        if target_kind == "earlier" and earlier:
            inputs.append({"name": iname, "step": draw(st.sampled_from(earlier)), "output": "out"})
        elif target_kind == "later" and names[index + 1 :]:
            inputs.append(
                {
                    "name": iname,
                    "step": draw(st.sampled_from(names[index + 1 :])),
                    "output": draw(st.sampled_from(OUTPUT_NAMES)),
                }
            )
        elif target_kind == "unknown":
            inputs.append({"name": iname, "step": "ghost", "output": "out"})
        elif target_kind == "self":
            inputs.append({"name": iname, "step": name, "output": "out"})
        elif target_kind == "broken":
            inputs.append(
                draw(
                    st.sampled_from(
                        [
                            {"name": iname, "step": "a"},
                            {"name": iname},
                            {"name": iname, "step": "a", "output": "out", "uri": "s3://b/k"},
                            {"name": iname, "uri": "ftp://x"},
                        ]
                    )
                )
            )
        else:
            inputs.append(
                {
                    "name": iname,
                    "uri": draw(
                        st.sampled_from(["s3://bucket/key", "file:///data/x.csv", "https://example.org/d.csv"])
                    ),
                }
            )
    if inputs:
        step["inputs"] = inputs
    if good or draw(st.integers(0, 9)) > 0:
        step["outputs"] = [{"name": "out"}]
    words = _template_texts(params, [i["name"] for i in inputs], [o["name"] for o in step.get("outputs", [])], good)
    if not good and draw(st.integers(0, 7)) == 0:
        step["uses"] = draw(st.sampled_from(COMPONENTS))
        if draw(st.booleans()):
            step["with"] = draw(
                st.dictionaries(
                    st.sampled_from(["label", "source", "seed", "bogus"]), st.one_of(json_scalars, words), max_size=2
                )
            )
    else:
        step["container"] = {
            "image": draw(st.sampled_from(["local", "python:3.11", "reg.example/i@sha256:" + "a" * 64])),
            "command": draw(st.lists(words, min_size=1, max_size=3)),
        }
        if draw(st.booleans()):
            step["container"]["args"] = draw(st.lists(words, max_size=2))
        if draw(st.integers(0, 3)) == 0:
            step["container"]["env"] = [{"name": "V", "value": draw(words)}]
    if earlier and draw(st.booleans()):
        step["dependsOn"] = draw(
            st.lists(st.sampled_from(earlier if good else [*names, "ghost"]), max_size=2, unique=True)
        )
    if draw(st.integers(0, 3)) == 0:
        choices = WHEN_GOOD if good else WHEN_GOOD + WHEN_BAD
        expr = draw(st.sampled_from(choices))
        if "{up}" in expr:
            ups = [i["step"] for i in inputs if "step" in i] + step.get("dependsOn", [])
            if not ups and good:
                expr = "true"
            expr = expr.replace("{up}", ups[0] if ups else draw(st.sampled_from(names)))
        if good and "params.flag" in expr and "flag" not in params:
            expr = "true"
        if good and "params.k" in expr and "k" not in params:
            expr = "false"
        step["when"] = expr
    if draw(st.booleans()):
        lo = 0 if good else -3
        step["retries"] = {"limit": draw(st.integers(lo, 3 if good else 200))}
        if draw(st.booleans()):
            step["retries"]["backoff"] = {
                "initialSeconds": draw(st.floats(lo, 20, allow_nan=False)),
                "factor": draw(st.floats(1 if good else 0, 4, allow_nan=False)),
            }
    if draw(st.integers(0, 3)) == 0:
        step["timeoutSeconds"] = draw(st.integers(1 if good else -10, 3600))
    if draw(st.integers(0, 4)) == 0:
        step["cache"] = {"enabled": draw(st.booleans())}
    if draw(st.integers(0, 4)) == 0:
        fan = draw(
            st.sampled_from(["items", "parameter", "grid"] if good else ["items", "parameter", "grid", "two", "none"])
        )
        if fan == "items":
            step["forEach"] = {"items": draw(st.lists(json_scalars, min_size=0, max_size=3))}
        elif fan == "parameter":
            step["forEach"] = {"parameter": "xs" if good or draw(st.booleans()) else draw(st.sampled_from(PARAM_NAMES))}
        elif fan == "grid":
            step["forEach"] = {
                "grid": {"depth": draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)), "lr": [0.1]}
            }
        elif fan == "two":
            step["forEach"] = {"items": [1], "parameter": "xs"}
        else:
            step["forEach"] = {}
        if draw(st.booleans()):
            step["forEach"]["maxConcurrency"] = draw(st.integers(1 if good else -1, 3))
    return step


@st.composite
def pipeline_specs(draw: st.DrawFn, good: bool) -> Doc:
    params = draw(_parameters(good))
    param_names = [p["name"] for p in params if isinstance(p.get("name"), str)]
    n = draw(st.integers(1, 6))
    names = draw(st.lists(st.sampled_from(STEP_NAMES), min_size=n, max_size=n, unique=good))
    if not good and draw(st.integers(0, 5)) == 0:
        names[draw(st.integers(0, n - 1))] = draw(st.sampled_from(BAD_STEP_NAMES))
    if good and any(p["name"] == "xs" for p in params) is False:
        params.append({"name": "xs", "type": "list", "default": draw(VALUE_OF_TYPE["list"])})
        param_names.append("xs")
    steps = [draw(_step(i, names, param_names, good)) for i in range(n)]
    spec: Doc = {"steps": steps}
    if good and draw(st.integers(0, 2)) == 0:
        # onExit steps: they may read the steps' outputs and wait for earlier onExit steps, as `_step` draws them
        exits = draw(st.lists(st.sampled_from(EXIT_STEP_NAMES), min_size=1, max_size=3, unique=True))
        spec["onExit"] = [draw(_step(n + j, names + exits, param_names, good)) for j in range(len(exits))]
        if draw(st.booleans()):
            spec["onExit"][0]["when"] = draw(st.sampled_from(["run.phase == 'Failed'", "run.failedSteps.size() == 0"]))
    if params:
        spec["parameters"] = params
    if draw(st.booleans()):
        spec["failFast"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        spec["parallelism"] = draw(st.integers(1 if good else -2, 4))
    if not good and draw(st.integers(0, 5)) == 0:
        spec["schedule"] = {
            "cron": draw(st.sampled_from(["* * * * *", "61 * * * *", "nonsense", "*/5 * * * * *"])),
            "timeZone": draw(st.sampled_from(["UTC", "Europe/Paris", "Mars/Olympus"])),
        }
    return spec


def _paths_to_dicts(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths_to_dicts(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths_to_dicts(v, (*prefix, i))
    return out


@st.composite
def with_extra_fields(draw: st.DrawFn, doc: Doc) -> Doc:
    """The document with unknown fields planted in random mappings (the schema must reject each by path)."""
    doc = copy.deepcopy(doc)
    spots = _paths_to_dicts(doc.get("spec", {}), ("spec",))
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(spots))
        target: Any = doc
        for part in where:
            target = target[part]
        target[draw(EXTRA_KEYS)] = draw(json_scalars)
    return doc


def _pipeline_doc(spec: Doc) -> Doc:
    return {"apiVersion": API_VERSION, "kind": "Pipeline", "metadata": {"name": "p"}, "spec": spec}


def valid_pipelines() -> st.SearchStrategy[Doc]:
    """Pipelines that keep the rules (most parse; some still trip a cross-field check)."""
    return pipeline_specs(good=True).map(_pipeline_doc)


@st.composite
def pipelines(draw: st.DrawFn) -> Doc:
    """Pipelines valid or broken: rule-keeping ones, rule-breaking ones, and either with unknown fields."""
    doc = _pipeline_doc(draw(pipeline_specs(good=draw(st.booleans()))))
    if draw(st.integers(0, 3)) == 0:
        doc = draw(with_extra_fields(doc))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["apiVersion", "kind", "spec", "metadata"]))] = draw(json_scalars)
    return doc


@st.composite
def runs(draw: st.DrawFn) -> Doc:
    """Runs by reference or with an inline spec, with parameter overrides of right and wrong types and names."""
    spec: Doc = {}
    mode = draw(st.sampled_from(["ref", "inline", "inline", "both", "neither"]))
    if mode in ("ref", "both"):
        spec["pipelineRef"] = {"name": draw(st.sampled_from(["p", "Bad_Name", ""]))}
    inline = draw(pipeline_specs(good=draw(st.booleans())))
    if mode in ("inline", "both"):
        spec["pipelineSpec"] = inline
    declared = [p.get("name") for p in inline.get("parameters", []) if isinstance(p.get("name"), str)]
    overrides = draw(
        st.dictionaries(st.sampled_from([*declared, "unknown", "k", *BAD_IDENTIFIERS]), json_values, max_size=3)
    )
    if overrides:
        spec["parameters"] = overrides
    if draw(st.integers(0, 4)) == 0:
        spec["cancel"] = draw(st.one_of(st.booleans(), json_scalars))
    if draw(st.integers(0, 4)) == 0:
        spec["approvals"] = [
            {
                "step": draw(st.sampled_from([*STEP_NAMES, "BAD"])),
                "decision": draw(st.sampled_from(["Approve", "Reject", "maybe"])),
            }
        ]
    doc: Doc = {"apiVersion": API_VERSION, "kind": "Run", "metadata": {"name": "r"}, "spec": spec}
    if draw(st.integers(0, 3)) == 0:
        doc = draw(with_extra_fields(doc))
    return doc


@st.composite
def model_deployments(draw: st.DrawFn) -> Doc:
    """ModelDeployments with one, none or several model sources, and autoscaling/rollout/server values in and out of range."""
    model: Doc = {}
    count = draw(st.sampled_from([1, 1, 1, 0, 2]))
    for source in draw(
        st.lists(st.sampled_from(["uri", "run", "pipeline"]), min_size=count, max_size=count, unique=True)
    ):
        if source == "uri":
            model["uri"] = draw(st.sampled_from(["s3://b/model.zip", "file:///m.zip", "http://x/m", ""]))
            if draw(st.integers(0, 3)) > 0:
                model["digest"] = draw(
                    st.sampled_from(["sha256:" + "a" * 64, "sha256:" + "a" * 64, "sha256:short", "md5:" + "a" * 32])
                )
        elif source == "run":
            model["run"] = {"name": "r1", "step": draw(st.sampled_from(["train", "Train"]))}
        else:
            model["pipeline"] = {"name": "p", "follow": draw(st.one_of(st.booleans(), st.just("yes")))}
    spec: Doc = {"model": model}
    if draw(st.booleans()):
        spec["autoscaling"] = {
            "minReplicas": draw(st.integers(-1, 3)),
            "maxReplicas": draw(st.integers(-1, 6)),
            "targetCpuUtilization": draw(st.integers(0, 120)),
        }
    if draw(st.booleans()):
        strategy = draw(st.sampled_from(["Rolling", "Canary", "BlueGreen"]))
        spec["rollout"] = {
            "strategy": strategy,
            "steps": [{"weight": draw(st.integers(-5, 120))} for _ in range(draw(st.integers(0, 2)))],
        }
        if draw(st.booleans()):
            spec["rollout"]["analysis"] = {
                "maxErrorRate": draw(st.floats(-1, 2, allow_nan=False)),
                "minRequests": draw(st.integers(-3, 50)),
            }
    if draw(st.booleans()):
        spec["server"] = {
            "port": draw(st.integers(0, 70000)),
            "cpu": draw(st.sampled_from(["500m", "2", "lots", "1Gi"])),
            "memory": draw(st.sampled_from(["512Mi", "-1", "x"])),
        }
    if draw(st.integers(0, 3)) == 0:
        spec["monitoring"] = {
            "drift": {
                "threshold": draw(st.floats(-1, 1, allow_nan=False)),
                "windowSeconds": draw(st.integers(0, 2000)),
            },
            "retrain": {
                "pipeline": draw(st.sampled_from(["p", "P!"])),
                "parameters": draw(st.dictionaries(st.sampled_from(["k", "bad-key"]), json_scalars, max_size=2)),
            },
        }
    doc: Doc = {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": "md"}, "spec": spec}
    if draw(st.integers(0, 3)) == 0:
        doc = draw(with_extra_fields(doc))
    return doc


documents = st.one_of(pipelines(), runs(), model_deployments(), any_yaml)
