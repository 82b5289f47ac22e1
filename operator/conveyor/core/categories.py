"""The labels categorical inputs are counted under: one definition for the model server and the operator.

The server labels its per-category counters with these, and the operator builds its drift reference
with the same function from the same training profile, so both sides agree on every label without
exchanging anything. Standard library only: the server loads this without the API models.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

OTHER_CATEGORY = "__other__"
"""The label of every value outside a feature's training top list."""
CATEGORY_LABEL_CHARS = 100


def category_label(value: object) -> str:
    """The counter label of a training category: its text, cut to `CATEGORY_LABEL_CHARS`.

    Values whose labels coincide (cut to the same text, or 1 and "1") share one label, and a value
    labelled like `OTHER_CATEGORY` is counted as other, on both sides.
    """
    return str(value)[:CATEGORY_LABEL_CHARS]


def category_slots(values: Iterable[Hashable]) -> tuple[list[str], dict[Hashable, int]]:
    """The labels of a training top list, in order, and the position in them of each value it holds.

    A value equal to an earlier one (1, 1.0 and True are one key, as in the profile's value counts)
    goes where the earlier one went; values labelled `OTHER_CATEGORY` get no position (counted as other).
    """
    labels: dict[str, int] = {}
    slots: dict[Hashable, int] = {}
    for value in values:
        label = category_label(value)
        if label != OTHER_CATEGORY and value not in slots:
            slots[value] = labels.setdefault(label, len(labels))
    return list(labels), slots
