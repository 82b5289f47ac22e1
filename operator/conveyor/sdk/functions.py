"""Function steps: a decorated Python function becomes a container step that runs it inside the step image.

The function's source travels in the spec (so the cache key covers it and a reviewer reads it in the YAML);
its arguments annotated `InputPath`/`OutputPath` are the step's input and output artifacts, the others its
values (parameters, literals, fan-out items), and a returned dict of numbers its metrics. What the function
needs and the image lacks (a module it imports, a global it reads) is an error when the pipeline is compiled,
at the line that needs it, never a surprise inside a pod.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.metadata
import inspect
import json
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from conveyor.sdk.builder import External, StepHandle, step
from conveyor.sdk.errors import Location, caller, fail
from conveyor.sdk.refs import ItemRef, OutputRef, ParamRef, RunField, input_path, output_path

RUNTIME_MODULE = "conveyor.sdk.function_runtime"
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")  # what the step templates would read in the source


@dataclass(frozen=True)
class _Artifact:
    kind: str


InputPath = Annotated[Path, _Artifact("input")]
"""An argument that receives an input artifact: the path of its local file (a directory for a fan-in)."""
OutputPath = Annotated[Path, _Artifact("output")]
"""An argument that names an output artifact: the path the function must write."""

_VALUE_KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", list: "list"}
_STEP_OPTIONS = frozenset(
    {
        "name",
        "depends_on",
        "when",
        "for_each",
        "max_concurrency",
        "retries",
        "timeout_seconds",
        "start_timeout_seconds",
        "cache",
        "resources",
        "approval",
        "pod",
    }
)


def default_step_image() -> str:
    """The image the operator runs built-in components in, unless its configuration names another."""
    from conveyor.controller.config import OperatorConfig  # noqa: PLC0415 - a settings model, no I/O

    return str(OperatorConfig.model_fields["step_image"].default)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _normal(m.group(1)) if m else ""


@functools.cache
def step_image_modules() -> frozenset[str] | None:
    """Top-level modules a function can import in the step image: the standard library, conveyor and what
    `conveyor[steps]` installs (read from the installed distributions' metadata). None when this
    environment lacks some of them, so the image's contents cannot be told from here."""
    try:
        own = importlib.metadata.requires("conveyor") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    todo = [
        (_requirement_name(r), False)
        for r in own
        if ";" not in r or re.search(r"extra\s*==\s*[\"']steps[\"']", r) is not None
    ]
    seen: set[str] = set()
    while todo:
        dist, conditional = todo.pop()
        if dist in seen or not dist:
            continue
        seen.add(dist)
        try:
            requirements = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            if conditional:  # for another platform or Python (tzdata on Windows): not in this image either
                continue
            return None
        todo += [(_requirement_name(r), ";" in r) for r in requirements if "extra" not in r.partition(";")[2]]
    modules = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(_normal(d) in seen for d in dists)
    }
    return frozenset(modules | set(sys.stdlib_module_names) | {"conveyor"})


@dataclass(frozen=True)
class _Argument:
    name: str
    kind: str  # input, output, or a value kind of function_runtime.KINDS
    required: bool


def _kind(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        marks = [m for m in annotation.__metadata__ if isinstance(m, _Artifact)]
        if marks:
            return marks[0].kind
        annotation = typing.get_args(annotation)[0]
    base = typing.get_origin(annotation) or annotation
    return _VALUE_KINDS.get(base, "json")


def _bound_names(node: ast.AST) -> set[str]:
    """Every name the function binds anywhere inside (arguments, assignments, imports, nested definitions)."""
    names: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, ast.alias):
            names.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler | ast.MatchAs):
            if n is not node and n.name:
                names.add(n.name)
        elif isinstance(n, ast.MatchStar) and n.name:
            names.add(n.name)
    return names


@dataclass(frozen=True)
class FunctionStep:
    """A Python function that runs as a step; call it inside a @pipeline function to add the step."""

    func: Callable[..., Any]
    source: str
    arguments: tuple[_Argument, ...]
    image: str | None
    options: Mapping[str, Any]

    def with_options(self, **options: Any) -> FunctionStep:
        """The same function with step settings (name, retries, when, for_each, resources, cache, ...)."""
        unknown = sorted(set(options) - _STEP_OPTIONS)
        if unknown:
            raise fail(
                caller(), f"unknown step option(s) {', '.join(unknown)} (options: {', '.join(sorted(_STEP_OPTIONS))})"
            )
        return replace(self, options={**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> StepHandle:
        where = caller()
        fn = self.func.__name__
        given_in_order = [a for a in self.arguments if a.kind != "output"]
        if len(args) > len(given_in_order):
            raise fail(
                where, f"{fn}() takes {len(given_in_order)} arguments (its outputs are not passed), got {len(args)}"
            )
        values: dict[str, Any] = {a.name: v for a, v in zip(given_in_order, args, strict=False)}
        for key, value in kwargs.items():
            if key in values:
                raise fail(where, f"{fn}() got argument {key!r} twice")
            values[key] = value
        by_name = {a.name: a for a in self.arguments}
        for key in values:
            if key not in by_name:
                raise fail(where, f"{fn}() has no argument {key!r} (arguments: {', '.join(by_name)})")
            if by_name[key].kind == "output":
                raise fail(
                    where, f"{fn}() argument {key!r} is an output (OutputPath): the step writes it, nothing passes it"
                )
        missing = [a.name for a in self.arguments if a.required and a.kind != "output" and a.name not in values]
        if missing:
            raise fail(where, f"{fn}() needs argument(s) {', '.join(missing)}")
        argv: list[str] = []
        inputs: dict[str, Any] = {}
        for a in self.arguments:
            if a.kind == "output":
                argv.append(f"output:{a.name}={output_path(a.name)}")
            elif a.name not in values:
                continue  # the function's own default applies
            elif a.kind == "input":
                inputs[a.name] = values[a.name]
                argv.append(f"input:{a.name}={input_path(a.name)}")
            else:
                argv.append(f"{a.kind}:{a.name}={self._text(a, values[a.name], where)}")
        env = (
            {"CONVEYOR_FUNCTION_SOURCE_B64": _b64(self.source)}
            if _TEMPLATE.search(self.source)
            else {"CONVEYOR_FUNCTION_SOURCE": self.source}
        )
        options = dict(self.options)
        name = options.pop("name", fn.replace("_", "-"))
        return step(
            name,
            image=self.image or default_step_image(),
            command=["python", "-m", RUNTIME_MODULE, fn],
            args=argv,
            env=env,
            inputs=inputs,
            outputs=[a.name for a in self.arguments if a.kind == "output"],
            **options,
        )

    def _text(self, argument: _Argument, value: Any, where: Location) -> str:
        if isinstance(value, ParamRef | ItemRef | RunField):  # RunField: sdk.run_phase & co. in an onExit step
            return str(value)
        if isinstance(value, OutputRef | StepHandle | External):
            raise fail(
                where,
                f"{self.func.__name__}() argument {argument.name!r} is a value ({argument.kind}); an artifact goes to "
                "an argument annotated sdk.InputPath",
            )
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value)
        except TypeError:
            raise fail(
                where, f"{self.func.__name__}() argument {argument.name!r}: {type(value).__name__} is not JSON"
            ) from None


def _b64(text: str) -> str:
    import base64  # noqa: PLC0415

    return base64.b64encode(text.encode()).decode()


def _analyse(func: Callable[..., Any], packages: Iterable[str]) -> tuple[str, tuple[_Argument, ...]]:
    """(source without decorators, arguments), or a PipelineError at the line of what the image lacks."""
    file = str(Path(inspect.getsourcefile(func) or func.__code__.co_filename).resolve())
    at = Location(file, func.__code__.co_firstlineno)
    if func.__code__.co_freevars:
        raise fail(
            at,
            f"function step {func.__name__!r} reads variables of the function around it "
            f"({', '.join(func.__code__.co_freevars)}): it runs alone in its image; pass them as arguments",
        )
    try:
        lines, first = inspect.getsourcelines(func)
    except (OSError, TypeError):
        raise fail(at, f"the source of {func.__name__!r} cannot be read: a function step needs it") from None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    node = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == func.__name__
    )
    if isinstance(node, ast.AsyncFunctionDef):
        raise fail(at, f"function step {func.__name__!r} is async; a step runs a plain function")
    source = textwrap.dedent("".join(lines[node.lineno - 1 : node.end_lineno]))

    def line(n: ast.AST) -> Location:
        return Location(file, first + getattr(n, "lineno", node.lineno) - 1)

    available = step_image_modules()
    if available is not None:
        provided = available | set(packages)
        for n in ast.walk(node):
            modules = []
            if isinstance(n, ast.Import):
                modules = [a.name.split(".")[0] for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                modules = [n.module.split(".")[0]]
            elif isinstance(n, ast.ImportFrom):
                raise fail(line(n), "a function step runs alone in its image: a relative import has nothing to import")
            for module in modules:
                if module not in provided:
                    raise fail(
                        line(n),
                        f"function step {func.__name__!r} imports {module!r}, which the step image does not have: "
                        f"build an image FROM the step image with it and give image= and packages=[{module!r}]",
                    )
    bound = _bound_names(node) | set(dir(builtins))
    skipped = _annotation_nodes(node)
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound and n not in skipped:
            raise fail(
                line(n),
                f"function step {func.__name__!r} reads {n.id!r} from its module, which does not travel with it: "
                "import it (or define it) inside the function, or pass it as an argument",
            )
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:  # an annotation that does not resolve is the user's to fix
        raise fail(at, f"cannot read the annotations of {func.__name__!r}: {e}") from None
    arguments = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise fail(at, f"function step {func.__name__!r}: *{p.name} cannot be given from a pipeline")
        arguments.append(_Argument(p.name, _kind(hints.get(p.name)), p.default is inspect.Parameter.empty))
    return source, tuple(arguments)


def _annotation_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[ast.AST]:
    """Names in the decorators (not carried) and the signature's annotations (never evaluated where it runs)."""
    roots: list[ast.AST] = [a.annotation for a in ast.walk(node.args) if isinstance(a, ast.arg) and a.annotation]
    roots += node.decorator_list
    if node.returns is not None:
        roots.append(node.returns)
    return {n for r in roots for n in ast.walk(r)}


@typing.overload
def function_step(func: Callable[..., Any], /) -> FunctionStep: ...


@typing.overload
def function_step(
    *, image: str | None = None, packages: Sequence[str] = (), **options: Any
) -> Callable[[Callable[..., Any]], FunctionStep]: ...


def function_step(
    func: Callable[..., Any] | None = None,
    /,
    *,
    image: str | None = None,
    packages: Sequence[str] = (),
    **options: Any,
) -> FunctionStep | Callable[[Callable[..., Any]], FunctionStep]:
    """Make a function a step: `@function_step` or `@function_step(image=..., packages=[...], retries=2)`.

    Without `image` it runs in the step image, and may import the standard library and what the step image
    installs (scikit-learn, pandas, numpy, ...); an image of your own, built FROM the step image, names the
    further modules it has in `packages`."""

    def wrap(f: Callable[..., Any]) -> FunctionStep:
        unknown = sorted(set(options) - _STEP_OPTIONS)
        if unknown:
            raise fail(
                caller(), f"unknown step option(s) {', '.join(unknown)} (options: {', '.join(sorted(_STEP_OPTIONS))})"
            )
        source, arguments = _analyse(f, packages)
        return FunctionStep(f, source, arguments, image, dict(options))

    return wrap(func) if func is not None else wrap
