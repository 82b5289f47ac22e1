"""Reading Conveyor documents from YAML files, with errors that name the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conveyor.api.modeldeployment import ModelDeployment
from conveyor.api.pipeline import Pipeline
from conveyor.api.run import Run
from conveyor.core.documents import DocumentTooLarge, load_yaml
from conveyor.core.validation import InvalidSpec, Issue, parse_document


def load_documents(path: Path) -> list[Pipeline | Run | ModelDeployment]:
    """Every document in a (multi-document) YAML file, validated; raises InvalidSpec."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidSpec([Issue("(file)", f"cannot read: {e.strerror or e}")], source) from None
    try:
        raw: list[Any] = load_yaml(text)
    except DocumentTooLarge as e:
        raise InvalidSpec([Issue(e.where, e.problem)], source) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        problem = getattr(e, "problem", None) or str(e)
        raise InvalidSpec([Issue(where, f"malformed YAML: {problem}")], source) from None
    if not raw:
        raise InvalidSpec([Issue("(document)", "the file holds no document")], source)
    docs = []
    for i, data in enumerate(raw):
        doc_source = source if len(raw) == 1 else f"{source} (document {i + 1})"
        docs.append(parse_document(data, doc_source))
    return docs
