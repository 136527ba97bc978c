"""The lung report in a Slicer scene: figures of the lung segments, in a table node.

The figures are those of ``lunggan segment --report`` (:mod:`LungGANLib.segment.report`),
computed from the segments as they are in the scene, so they follow the
radiologist's edits: the lung segments are the last ones LungGAN made (tagged
``LungGAN``) named "right lung", "left lung" or "lungs" (or those names with
a " (n)" that keeps them unique).
"""

from __future__ import annotations

import re

import vtk

from ..errors import InputError
from ..segment.report import FIGURES
from .fields import FIGURES_TABLE_REFERENCE as TABLE_REFERENCE  # the panel reads it too, before scipy is installed

#: The table's rows: (figure, what a radiologist reads).
ROWS = (
    ("ml", "Volume (mL)"),
    ("mean_hu", "Mean density (HU)"),
    ("laa950_percent", "LAA-950 (% below -950 HU)"),
    ("laa910_percent", "LAA-910 (% below -910 HU)"),
    ("perc15_hu", "PD15 (HU, 15th percentile)"),
)
#: The table's value columns: (region of the report, column title).
COLUMNS = (("right_lung", "Right lung"), ("left_lung", "Left lung"), ("total_lung", "Both lungs"))

assert tuple(figure for figure, _ in ROWS) == FIGURES


def lung_segment_ids(segmentation_node, generated_tag: str) -> dict[str, str]:
    """The segment IDs of the last lung segments LungGAN made: {"right lung": id, "left lung": id} or {"lungs": id}."""
    segmentation = segmentation_node.GetSegmentation()
    found: dict[str, tuple[int, str]] = {}  # name -> (position, segment ID) of its last segment
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        if not segment.HasTag(generated_tag):
            continue
        name = re.sub(r" \(\d+\)$", "", segment.GetName())
        if name in ("right lung", "left lung", "lungs"):
            found[name] = (index, segment_id)  # later ones win: the last run
    split = "right lung" in found and "left lung" in found
    if split and not ("lungs" in found and found["lungs"][0] > found["left lung"][0]):
        return {"right lung": found["right lung"][1], "left lung": found["left lung"][1]}
    if "lungs" in found:
        return {"lungs": found["lungs"][1]}
    raise InputError(f"segmentation {segmentation_node.GetName()!r} has no lung segments made by LungGAN: segment the lungs first")


def fill_table(scene, figures: dict, segmentation_node, name: str):
    """Write the figures into the segmentation's figures table (created, or reused from an earlier run).

    Rows are the figures, columns the right lung, the left lung and both
    (right and left are left out for a single "lungs" segment).
    """
    table = segmentation_node.GetNodeReference(TABLE_REFERENCE)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        segmentation_node.SetNodeReferenceID(TABLE_REFERENCE, table.GetID())
    regions = [(region, title) for region, title in COLUMNS if figures.get(f"{region}_ml") is not None]
    vtk_table = vtk.vtkTable()
    labels = vtk.vtkStringArray()
    labels.SetName("Measurement")
    for _, text in ROWS:
        labels.InsertNextValue(text)
    vtk_table.AddColumn(labels)
    for region, title in regions:
        column = vtk.vtkDoubleArray()
        column.SetName(title)
        for figure, _ in ROWS:
            value = figures.get(f"{region}_{figure}")
            column.InsertNextValue(float("nan") if value is None else round(value, 2))
        vtk_table.AddColumn(column)
    table.SetAndObserveTable(vtk_table)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)  # computed: edits belong in the segmentation
    return table


def segmentation_figures(scene, volume_node, segmentation_node, table: bool = True):
    """The lung report's figures of a LungGAN segmentation as it is now (edits included).

    Returns:
        (figures, the segmentation's figures table node, filled; None without ``table``).

    Raises:
        InputError: the segmentation holds no LungGAN lung segments.
    """
    from ..segment.report import lung_figures
    from .mrml_nodes import GENERATED_TAG, ct_from_volume_node, labels_from_segmentation

    ids = lung_segment_ids(segmentation_node, GENERATED_TAG)
    volume = ct_from_volume_node(volume_node, force=True)
    labels = labels_from_segmentation(segmentation_node, volume_node, volume, list(ids.values()))
    figures = lung_figures(volume.array, labels, volume.voxel_volume_ml, single_label="lungs" in ids)
    node = fill_table(scene, figures, segmentation_node, f"{segmentation_node.GetName()} figures") if table else None
    return figures, node
