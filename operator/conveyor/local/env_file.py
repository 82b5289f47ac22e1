"""`--env-file FILE`, read one way for every command that runs steps on this machine: `conveyor run`, `conveyor
rerun --local` and the SDK's `run_local(env_file=...)`.

The parsing and the check against the pipeline are core.envfile's; this reads the file and reports, as issues, what
cannot be read, what is malformed and which valueFrom variables the file (or its absence) leaves without a value.
No issue holds a value of the file.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.api.pipeline import PipelineSpec
from conveyor.core.envfile import local_step_env, parse_env_file
from conveyor.core.validation import Issue


def read_env_file(path: Path | None, spec: PipelineSpec) -> tuple[dict[str, str] | None, list[Issue]]:
    """The file's values (None without a file) and what is wrong with them or missing from them for `spec`."""
    values: dict[str, str] | None = None
    issues: list[Issue] = []
    if path is not None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"  # the decoder's message quotes bytes
            return None, [Issue("--env-file", f"cannot read {path}: {why}")]
        values, issues = parse_env_file(text, str(path))
    return values, issues + local_step_env(spec, values)[1]
