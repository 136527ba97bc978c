"""MRML nodes <-> the core's arrays with geometry: volumes, segmentations, the training plot.

The adapter under :mod:`LungGANLib.slicer.mrml` (the logic). It uses only what the PyPI
package ``slicer-core`` provides (MRML scene and nodes, ``slicer.util`` array
helpers, the segmentations and terminologies logic), so it runs, and is tested,
without the Slicer application.

Geometry: MRML volumes are RAS with an IJK-to-RAS matrix; the core works in
LPS (SimpleITK). The conversion flips the first two axes of origin and
direction; voxel arrays are (k, j, i) = (z, y, x) on both sides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..config import LABEL_NAMES
from ..errors import InputError, LungGANError
from ..io.volumes import (
    CTVolume,
    image_stem,
    mask_from_image,
    mask_to_image,
    volume_from_image,
)

logger = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS

#: Segment names by label value.
SEGMENT_NAMES = LABEL_NAMES
SINGLE_SEGMENT_NAME = "lungs"

_CATEGORY = "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
_ANATOMIC = "Anatomic codes - DICOM master list~^^~^^"
#: Slicer terminology entries (SNOMED CT): Anatomical Structure / Lung (39607008) / Right (24028007), Left (7771000).
TERMINOLOGY = {
    "right lung": f"{_CATEGORY}~SCT^39607008^Lung~SCT^24028007^Right~{_ANATOMIC}",
    "left lung": f"{_CATEGORY}~SCT^39607008^Lung~SCT^7771000^Left~{_ANATOMIC}",
    "lungs": f"{_CATEGORY}~SCT^39607008^Lung~^^~{_ANATOMIC}",
}
#: The colour Slicer's General Anatomy terminology recommends for the lung (either side): RGB 197, 165, 145.
LUNG_COLOUR = (197 / 255, 165 / 255, 145 / 255)

#: Segment tag marking the segments LungGAN made ("replace" removes only those).
GENERATED_TAG = "LungGAN"

#: What to do when the chosen output segmentation already has segments.
ON_EXISTING = ("add", "replace", "new")


class Cancelled(LungGANError):
    """The user cancelled; nothing was changed."""


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface conversion rules (the Segmentations module does it in Slicer)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    have = {rules[i].GetName() for i in range(len(rules))} if rules else set()
    for rule_class in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        rule = rule_class()
        if rule.GetName() not in have:
            factory.RegisterConverterRule(rule)


# -- volumes ------------------------------------------------------------------------------------


def image_from_volume_node(node) -> sitk.Image:
    """A SimpleITK image (LPS) with the voxels and geometry of a scalar or labelmap volume node.

    The node's own geometry is used; a parent transform is not applied (the
    results are placed under the same transform instead).

    Raises:
        InputError: the node has no image data.
    """
    if node is None or node.GetImageData() is None:
        raise InputError(f"volume {getattr(node, 'GetName', lambda: None)()!r} holds no image: load a CT first")
    array = slicer.util.arrayFromVolume(node)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in node.GetSpacing()))
    direction = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(direction)
    ras = np.array([[direction.GetElement(r, c) for c in range(3)] for r in range(3)])
    image.SetDirection(tuple((_LPS @ ras).ravel()))
    image.SetOrigin(tuple(_LPS @ np.array(node.GetOrigin(), dtype=float)))
    return image


def ct_from_volume_node(node, force: bool = False) -> CTVolume:
    """The core's canonical :class:`CTVolume` of a scalar volume node (HU).

    Raises:
        InputError: no image, not 3D, or not CT (unless ``force``).
    """
    return volume_from_image(image_from_volume_node(node), source=node.GetName(), force=force)


def set_volume_node_image(node, image: sitk.Image) -> None:
    """Fill a volume node with a SimpleITK image's voxels and geometry (LPS -> RAS)."""
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    node.SetSpacing(image.GetSpacing())
    node.SetOrigin(tuple(_LPS @ np.array(image.GetOrigin())))
    ras = _LPS @ np.array(image.GetDirection()).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, ras[r, c])
    node.SetIJKToRASDirectionMatrix(matrix)


def source_volume(segmentation_node, fallback=None):
    """The CT volume node a segmentation was made on (its reference image geometry, which LungGAN sets), else
    ``fallback``: what its figures and its review are measured on, whichever CT is selected now."""
    source = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    return source if source is not None and source.IsA("vtkMRMLScalarVolumeNode") else fallback


def same_geometry(a, b, tolerance: float = 1e-4) -> bool:
    """True when two volume nodes share dimensions and IJK-to-RAS matrix."""
    if a.GetImageData() is None or b.GetImageData() is None:
        return False
    if a.GetImageData().GetDimensions() != b.GetImageData().GetDimensions():
        return False
    ma, mb = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(ma)
    b.GetIJKToRASMatrix(mb)
    return all(abs(ma.GetElement(r, c) - mb.GetElement(r, c)) <= tolerance for r in range(4) for c in range(4))


def load_ct_node(scene, path: str | os.PathLike, name: str | None = None):
    """Read a CT file or DICOM folder into a new scalar volume node (HU, geometry kept)."""
    from ..io.volumes import check_is_ct, read_image

    image, modality = read_image(path)
    check_is_ct(sitk.GetArrayViewFromImage(image), modality, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or image_stem(path))
    set_volume_node_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node


# -- segmentations ------------------------------------------------------------------------------


def labels_from_segmentation(
    segmentation_node, volume_node, volume: CTVolume | None = None, segment_ids: Sequence[str] | None = None
) -> np.ndarray:
    """Canonical (z, y, x) labels of a segmentation (or labelmap node) on a CT node's grid.

    Segments (all, or ``segment_ids``) are numbered 1, 2, ... in their order
    (overlaps: the later wins). For training, any label > 0 is lung.

    Raises:
        InputError: the segmentation is empty.
    """
    volume = volume or ct_from_volume_node(volume_node, force=True)
    if segmentation_node.IsA("vtkMRMLLabelMapVolumeNode"):
        return mask_from_image(image_from_volume_node(segmentation_node), volume)
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError(f"segmentation {segmentation_node.GetName()!r} has no segments: draw or segment the lungs first")
    scene = segmentation_node.GetScene()
    with temporary_nodes(scene):
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "LungGAN temporary labels")
        ids = vtk.vtkStringArray()
        if segment_ids is None:
            segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        for segment_id in segment_ids or ():
            ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, volume_node):
            raise InputError(f"segmentation {segmentation_node.GetName()!r} could not be exported on {volume_node.GetName()!r}'s grid")
        return mask_from_image(image_from_volume_node(label_node), volume)


@contextmanager
def temporary_nodes(scene):
    """Remove every node added to the scene inside the block (helpers' labelmaps, their colour tables...)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in before:
                scene.RemoveNode(node)


def _unique_name(existing: set[str], name: str) -> str:
    if name not in existing:
        return name
    n = 2
    while f"{name} ({n})" in existing:
        n += 1
    return f"{name} ({n})"


def write_segmentation(
    scene,
    labels: np.ndarray,
    volume: CTVolume,
    volume_node,
    segmentation_node=None,
    on_existing: str = "add",
    single_label: bool = False,
    labelmap: bool = False,
) -> tuple:
    """Put lung labels into a segmentation node (and optionally a labelmap node).

    Args:
        scene: the MRML scene.
        labels: canonical (z, y, x) labels (1 right, 2 left; or 1 for both).
        volume: the CT the labels were computed on.
        volume_node: its node: the segmentation references it and gets its geometry.
        segmentation_node: output node; None creates ``"<CT name> lungs"`` under the CT's
            transform. A node under another transform than the CT's is refused (it is never re-parented).
        on_existing: when the output already has segments: ``"add"`` new segments
            beside them (names made unique), ``"replace"`` the lung segments LungGAN
            made before (tagged ``LungGAN``; the user's own segments stay), or ``"new"``: leave it alone and create another node.
        single_label: one "lungs" segment instead of right and left.
        labelmap: also create a labelmap volume node with the labels.

    Returns:
        (segmentation node, labelmap node or None).
    """
    if on_existing not in ON_EXISTING:
        raise ValueError(f"on_existing must be one of {ON_EXISTING}, got {on_existing!r}")
    ensure_segmentation_converters()
    image = mask_to_image(labels, volume)
    if segmentation_node is not None and segmentation_node.GetSegmentation().GetNumberOfSegments() and on_existing == "new":
        segmentation_node = None
    if segmentation_node is not None and segmentation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        # Never re-parent a user's node (its own segments would move); lungs imported into another frame need its
        # reference geometry in that frame, which the segmentation does not keep reliably: refuse instead.
        raise InputError(
            f"segmentation {segmentation_node.GetName()!r} is under another transform than the CT "
            f"{volume_node.GetName()!r}: choose a segmentation under the CT's transform, or a new one"
        )
    created = segmentation_node is None
    if created:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} lungs")
    segmentation = segmentation_node.GetSegmentation()
    names = {SINGLE_SEGMENT_NAME: 1} if single_label else {name: value for value, name in SEGMENT_NAMES.items()}
    if on_existing == "replace":
        for index in reversed(range(segmentation.GetNumberOfSegments())):
            segment_id = segmentation.GetNthSegmentID(index)
            if segmentation.GetSegment(segment_id).HasTag(GENERATED_TAG):
                segmentation.RemoveSegment(segment_id)
    if segmentation.GetNumberOfSegments() == 0:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation_node.SetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole(), volume_node.GetID())
    if created:  # a new node lives in the CT's frame; a user's own node keeps its transform
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())

    taken = {segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName() for i in range(segmentation.GetNumberOfSegments())}
    array = sitk.GetArrayViewFromImage(image)
    for name, value in names.items():
        segment_id = segmentation.AddEmptySegment("", _unique_name(taken, name), LUNG_COLOUR)
        segment = segmentation.GetSegment(segment_id)
        # The tag, not SetTerminology: that exists only from Slicer 5.10 on, the tag on every version.
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), TERMINOLOGY[name])
        segment.SetTag(GENERATED_TAG, "1")
        if not (array == value).any():
            continue
        with temporary_nodes(scene):
            one = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "LungGAN temporary label")
            set_volume_node_image(one, sitk.Cast(image == value, sitk.sitkUInt8))
            # In the CT's frame: the import then maps it into the segmentation's frame, whatever transforms either is under.
            one.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(one, segmentation_node, ids)
    if created or segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.CreateClosedSurfaceRepresentation()  # shown in 3D
    label_node = None
    if labelmap:
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{volume_node.GetName()} lungs label")
        set_volume_node_image(label_node, image)
        label_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        label_node.CreateDefaultDisplayNodes()
    return segmentation_node, label_node


def segment_names(segmentation_node) -> list[str]:
    """Names of a segmentation's segments, in order."""
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName() for i in range(segmentation.GetNumberOfSegments())]


# -- training plot ------------------------------------------------------------------------------


@dataclass
class TrainingPlot:
    """A table of per-epoch values and a chart of them (``vtkMRMLPlotChartNode``) in the scene."""

    table: object
    chart: object
    series: list = field(default_factory=list)

    COLUMNS = ("epoch", "train BCE", "validation Dice", "critic EM estimate")

    @classmethod
    def create(cls, scene, name: str) -> TrainingPlot:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} training log")
        for column in cls.COLUMNS:
            array = table.AddColumn(vtk.vtkDoubleArray())
            array.SetName(column)
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} training")
        chart.SetTitle(f"LungGAN training: {name}")
        chart.SetXAxisTitle("epoch")
        plot = cls(table, chart)
        for column, colour in zip(cls.COLUMNS[1:], ((0.2, 0.4, 0.8), (0.1, 0.6, 0.2), (0.8, 0.3, 0.2))):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetColor(*colour)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            plot.series.append(series)
        return plot

    def add(self, record) -> None:
        """Append one epoch (a :class:`LungGANLib.train.trainer.EpochRecord`)."""
        table = self.table.GetTable()
        row = table.GetNumberOfRows()
        table.InsertNextBlankRow()
        for column, value in zip(self.COLUMNS, (record.epoch, record.train_bce, record.val_dice, record.em_distance)):
            table.SetValue(row, self.COLUMNS.index(column), vtk.vtkVariant(float(value)))
        table.Modified()
        self.table.Modified()

    def remove(self, scene) -> None:
        for node in [*self.series, self.chart, self.table]:
            scene.RemoveNode(node)
