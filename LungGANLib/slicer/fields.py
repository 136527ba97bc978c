"""What the panel's path fields mean, and the names it shares with the logic, without Qt or any package
Slicer lacks (so it is tested under slicer-core, and loads before PyTorch and scipy are installed).

CTK's ``ctkPathLineEdit`` emits ``currentPathChanged`` only for text its validator accepts, and the
validator made from name filters never accepts an empty text (nor, with the model filter, a path
without ``.safetensors``). A field the user cleared would keep its old path in the parameter node, and
*Segment lungs* would use a model the panel no longer shows. So the panel follows the inner line
edit's ``textChanged`` and reads each field again when a button is clicked, through :func:`sync_path`.
"""

from __future__ import annotations

#: Path fields synced by hand, widget name -> parameter: Slicer binds a ctkPathLineEdit only to a
#: pathlib.Path parameter, whose empty value shows "." and can never be emptied again.
PATH_FIELDS = {"modelPathLineEdit": "modelPath", "trainOutputPathLineEdit": "trainOutput"}


#: The segmentation's node reference to its lung figures' table node (saved with the scene).
FIGURES_TABLE_REFERENCE = "LungGANFigures"
#: The segmentation's node reference to its review table (the slices most likely wrong).
REVIEW_TABLE_REFERENCE = "LungGANReview"
#: The review table's columns: the slice (the CT's K index), its score, and the reasons.
REVIEW_COLUMNS = ("Slice", "Score (mL)", "Reasons")


def path_or_none(path) -> str | None:
    """An empty path field means the default."""
    return str(path) if path and str(path).strip() not in ("", ".") else None


def sync_path(parameter_node, field: str, text) -> str | None:
    """Put a path field's text, as the user left it, into the parameter node; returns the path it means.

    An empty field means the default (None); a path without its suffix is kept as typed, so the command
    that uses it names it in its message.
    """
    text = "" if text is None else str(text).strip()
    if parameter_node is not None and getattr(parameter_node, field) != text:
        setattr(parameter_node, field, text)
    return path_or_none(text)
