"""The review in a Slicer scene: the slices most likely wrong, as a table node kept with the segmentation.

Each row is a flagged slice, most suspicious first: its index along the CT volume's K axis, its
score and its reasons (:mod:`LungGANLib.segment.review`). The table is referenced by the
segmentation (:data:`~LungGANLib.slicer.fields.REVIEW_TABLE_REFERENCE`), so it is saved and
loaded with it; :func:`slice_center` gives the point the slice views jump to.
"""

from __future__ import annotations

import numpy as np
import vtk

from .fields import REVIEW_COLUMNS, REVIEW_TABLE_REFERENCE


def review_table(scene, segmentation_node, review: dict):
    """Write a review (``Review.as_dict()``, indices along the CT's K axis) into the segmentation's review
    table (created, or reused from an earlier run); returns the table node."""
    table = segmentation_node.GetNodeReference(REVIEW_TABLE_REFERENCE)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation_node.GetName()} review")
        segmentation_node.SetNodeReferenceID(REVIEW_TABLE_REFERENCE, table.GetID())
    columns = (vtk.vtkIntArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray())
    for column, name in zip(columns, REVIEW_COLUMNS):
        column.SetName(name)
    for s in review.get("slices", []):
        if not s["flags"]:
            continue
        columns[0].InsertNextValue(int(s["index"]))
        columns[1].InsertNextValue(float(s["score"]))
        columns[2].InsertNextValue("; ".join(f["text"] for f in s["flags"]))
    vtk_table = vtk.vtkTable()
    for column in columns:
        vtk_table.AddColumn(column)
    table.SetAndObserveTable(vtk_table)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    table.SetDescription("\n".join(review.get("scan_flags", [])))  # the whole scan's flags, if any
    return table


def as_sentence(text: str) -> str:
    """``text`` as a sentence of a status line: its first letter capitalised, a full stop at its end."""
    return f"{text[:1].upper()}{text[1:]}{'' if text.endswith('.') else '.'}"


def review_status(review: dict) -> str:
    """What a finished segmentation's status line says of its review: how many slices are flagged, then the whole
    scan's flags (a lung missing, a field of view that cuts the lungs...), each a sentence."""
    scan = "".join(f" {as_sentence(flag)}" for flag in review.get("scan_flags", []))
    return f" {review['flagged_slices']} slices flagged for review.{scan}"


def flagged_slices(table) -> list[int]:
    """The slice indices of a review table, in its order (most suspicious first)."""
    column = table.GetTable().GetColumnByName(REVIEW_COLUMNS[0]) if table is not None else None
    return [int(column.GetValue(row)) for row in range(column.GetNumberOfTuples())] if column is not None else []


def slice_center(volume_node, index: int) -> tuple[float, float, float]:
    """The world (RAS) point at the middle of the volume's slice ``index`` along K, for the slice views to jump to."""
    dims = volume_node.GetImageData().GetDimensions()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    parent = volume_node.GetParentTransformNode()
    if parent is not None and parent.IsLinear():
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        vtk.vtkMatrix4x4.Multiply4x4(to_world, ijk_to_ras, ijk_to_ras)
    point = ijk_to_ras.MultiplyPoint(((dims[0] - 1) / 2.0, (dims[1] - 1) / 2.0, float(index), 1.0))
    return tuple(float(v) for v in np.asarray(point[:3]))


def jump_to_slice(scene, volume_node, index: int) -> tuple[float, float, float]:
    """Move every slice view to the middle of the volume's slice ``index`` (centred); returns the point."""
    import slicer

    point = slice_center(volume_node, index)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *point, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return point


def review_segmentation(scene, volume_node, segmentation_node):
    """Review a LungGAN segmentation as it is now (see ``LungGANLogic.reviewSlices``): the review as a dict, indices
    along the CT's K axis, and the segmentation's review table node, filled."""
    from ..segment.classical import airways_in_box, body_mask
    from ..segment.inference import SegmentOptions, review_of
    from ..segment.review_files import in_file_order
    from .mrml_figures import lung_segment_ids
    from .mrml_nodes import GENERATED_TAG, ct_from_volume_node, labels_from_segmentation, source_volume

    volume_node = source_volume(segmentation_node, volume_node)
    ids = lung_segment_ids(segmentation_node, GENERATED_TAG)
    volume = ct_from_volume_node(volume_node, force=True)
    labels = labels_from_segmentation(segmentation_node, volume_node, volume, list(ids.values()))
    options = SegmentOptions(method="gan", single_label="lungs" in ids, device="cpu")
    # The airways as segment() leaves them out: partly aerated tissue at their walls is not lung left out.
    airways = airways_in_box(volume.array, body_mask(volume.array, options.params), volume.spacing, options.params)
    review = in_file_order(review_of(labels, volume, options, None, airways), volume.orientation, labels.shape[0]).as_dict()
    return review, review_table(scene, segmentation_node, review)
