"""MRML adapter: LungGAN in a Slicer scene. The only module of LungGANLib that imports ``slicer``.

It converts between MRML nodes and the core's arrays-with-geometry, and holds
:class:`LungGANLogic`, the logic the Slicer module and the Python console use:

>>> logic = LungGANLogic()                  # slicer.mrmlScene, or pass a scene
>>> segmentation = logic.segment(volumeNode) # "right lung" and "left lung" segments

It uses only what the PyPI package ``slicer-core`` provides (MRML scene and
nodes, ``slicer.util`` array helpers, the segmentations and terminologies
logic), so it runs, and is tested, without the Slicer application.

Geometry: MRML volumes are RAS with an IJK-to-RAS matrix; the core works in
LPS (SimpleITK). The conversion flips the first two axes of origin and
direction; voxel arrays are (k, j, i) = (z, y, x) on both sides.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .config import LABEL_NAMES
from .errors import InputError, LungGANError, OutputExistsError
from .io import IMAGE_SUFFIXES, CTVolume, mask_from_image, mask_to_image, volume_from_image

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
EXISTING = ("add", "replace", "new")


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
    return volume_from_image([image_from_volume_node(node)], source=node.GetName(), force=force)


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
    from .io import check_is_ct, read_image

    image, modality = read_image(path)
    check_is_ct(sitk.GetArrayViewFromImage(image), modality, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or _stem(path))
    set_volume_node_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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
    existing: str = "add",
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
        existing: when the output already has segments: ``"add"`` new segments
            beside them (names made unique), ``"replace"`` the lung segments LungGAN
            made before (tagged ``LungGAN``; the user's own segments stay), or ``"new"``: leave it alone and create another node.
        single_label: one "lungs" segment instead of right and left.
        labelmap: also create a labelmap volume node with the labels.

    Returns:
        (segmentation node, labelmap node or None).
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    ensure_segmentation_converters()
    image = mask_to_image(labels, volume)
    if segmentation_node is not None and segmentation_node.GetSegmentation().GetNumberOfSegments() and existing == "new":
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
    if existing == "replace":
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
        """Append one epoch (a :class:`LungGANLib.training.EpochRecord`)."""
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


# -- the logic ----------------------------------------------------------------------------------


def default_model_dir() -> Path:
    """Where models trained in Slicer go by default: ``~/LungGAN/models``."""
    return Path.home() / "LungGAN" / "models"


class LungGANLogic:
    """Segment lungs and train LungGAN models on MRML nodes. Works without the widget.

    Args:
        scene: the MRML scene (default: ``slicer.mrmlScene``).

    Example:
        >>> logic = LungGANLogic()
        >>> segmentation = logic.segment(volumeNode)
        >>> model = logic.train([(volumeNode, segmentation)], variant="regression", epochs=5)
    """

    def __init__(self, scene=None) -> None:
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise RuntimeError("no MRML scene: pass one (LungGANLogic(scene)) outside the Slicer application")

    def loadCT(self, path: str | os.PathLike, name: str | None = None):
        """Read a CT file or DICOM folder into a new scalar volume node."""
        return load_ct_node(self.scene, path, name)

    # -- segmentation ---------------------------------------------------------------------------

    def segment(
        self,
        volumeNode,
        segmentationNode=None,
        model: str | None = None,
        device: str = "auto",
        splitLungs: bool = True,
        fillHoles: bool = True,
        createLabelmap: bool = False,
        existing: str = "add",
        method: str = "gan",
        progress: Callable[[int, int], None] | None = None,
        shouldCancel: Callable[[], bool] | None = None,
    ):
        """Segment the lungs of a CT volume node, in this process.

        Args:
            volumeNode: the CT (``vtkMRMLScalarVolumeNode``, HU).
            segmentationNode: where the segments go (None: a new node).
            model: generator weights (None: the shipped model).
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            splitLungs: right and left lung segments (else one "lungs" segment).
            fillHoles: vessels and nodules inside the lung count as lung.
            createLabelmap: also create a labelmap volume node.
            existing: ``add``, ``replace`` or ``new`` when the output already has segments.
            method: ``gan`` (the generator) or ``classical``.
            progress: called with (done, total) slices.
            shouldCancel: polled with each progress report; True stops and changes nothing.

        Returns:
            The segmentation node (its labelmap node is ``logic.lastLabelmapNode``, the lung
            figures ``logic.lastFigures`` and their table node ``logic.lastFiguresTable``).

        Raises:
            InputError / ModelError: bad input, with a message for the user.
            Cancelled: ``shouldCancel`` returned True; the scene is unchanged.
        """
        from .inference import SegmentOptions, segment

        volume = ct_from_volume_node(volumeNode)

        def report(done: int, total: int) -> None:
            if shouldCancel and shouldCancel():
                raise Cancelled("segmentation cancelled; nothing was changed")
            if progress:
                progress(done, total)

        options = SegmentOptions(method=method, model=model, device=device, single_label=not splitLungs, fill_holes=fillHoles)
        labels = segment(volume, options, report)
        if shouldCancel and shouldCancel():
            raise Cancelled("segmentation cancelled; nothing was changed")
        node, self.lastLabelmapNode = write_segmentation(
            self.scene, labels, volume, volumeNode, segmentationNode, existing, not splitLungs, createLabelmap
        )
        self.lastFigures = self.lungFigures(volumeNode, node)
        return node

    def lungFigures(self, volumeNode, segmentationNode, table: bool = True) -> dict:
        """The lung report's figures of a LungGAN segmentation as it is now (edits included).

        The same figures as ``lunggan segment --report`` (see :mod:`LungGANLib.report`):
        ``right_lung_ml``, ``right_lung_mean_hu``, ``right_lung_laa950_percent``, ... for
        the right lung, the left lung and both (``total_lung_*``), from the last lung
        segments LungGAN made and the CT's HU. ``table`` also writes them into the
        segmentation's table node (``logic.lastFiguresTable``), reused on later calls.

        Raises:
            InputError: the segmentation holds no LungGAN lung segments.
        """
        from .mrml_figures import fill_table, lung_segment_ids
        from .report import lung_figures

        ids = lung_segment_ids(segmentationNode, GENERATED_TAG)
        volume = ct_from_volume_node(volumeNode, force=True)
        labels = labels_from_segmentation(segmentationNode, volumeNode, volume, list(ids.values()))
        figures = lung_figures(volume.array, labels, volume.voxel_volume_ml, single_label="lungs" in ids)
        if table:
            self.lastFiguresTable = fill_table(self.scene, figures, segmentationNode, f"{segmentationNode.GetName()} figures")
        return figures

    def startSegmentation(
        self,
        volumeNode,
        model: str | None = None,
        device: str = "auto",
        splitLungs: bool = True,
        fillHoles: bool = True,
    ) -> SegmentationJob:
        """Start segmenting in a background process; poll the returned job, then ``job.finish(...)``."""
        from .background import BackgroundProcess

        work = Path(tempfile.mkdtemp(prefix="LungGAN-"))
        image = image_from_volume_node(volumeNode)
        ct_path, out_path = work / "ct.nrrd", work / "lungs.nrrd"
        sitk.WriteImage(image, str(ct_path), useCompression=False)
        args = ["segment", ct_path, "-o", out_path, "--progress-json", "--device", device]
        if model:
            args += ["--model", model]
        if not splitLungs:
            args.append("--single-label")
        if not fillHoles:
            args.append("--no-fill-holes")
        return SegmentationJob(self, volumeNode, BackgroundProcess(args), out_path, work, splitLungs)

    # -- training -------------------------------------------------------------------------------

    def train(
        self,
        pairs: Sequence[tuple],
        variant: str = "baseline",
        epochs: int = 5,
        output: str | os.PathLike | None = None,
        fineTune: bool = True,
        device: str = "auto",
        stepsPerEpoch: int | None = None,
        validationFraction: float = 0.15,
        overwrite: bool = False,
        plot: bool = True,
        progress: Callable[[int, int, object], None] | None = None,
        onEpoch: Callable[[object], None] | None = None,
        shouldCancel: Callable[[], bool] | None = None,
        seed: int = 0,
    ) -> str:
        """Train (or fine-tune) a generator on annotated volumes, in this process.

        Args:
            pairs: (CT volume node, segmentation or labelmap node) pairs; any segment counts as lung.
            variant: ``baseline`` or a critic: ``basic``, ``product``, ``early-fusion``,
                ``late-fusion``, ``regression``.
            epochs: passes over the slices.
            output: model file to write (``.safetensors``); default ``~/LungGAN/models/<variant>-<n>.safetensors``.
            fineTune: start from the shipped model (else from scratch).
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            stepsPerEpoch: at most this many steps per epoch (None: all slices).
            validationFraction: share of slices held out to choose the best epoch.
            overwrite: replace ``output`` if it exists.
            plot: show the losses in a ``vtkMRMLPlotChartNode`` as epochs finish.
            progress: called with (step, steps, losses) after each step.
            onEpoch: called with each epoch's record.
            shouldCancel: polled after each step; True stops, writes no model and removes the plot.
            seed: seeds weights, shuffling and augmentation.

        Returns:
            The model path; select it for :meth:`segment` with ``model=``.

        Raises:
            InputError: no pairs, mismatched pairs, an existing output, bad settings.
            Cancelled: ``shouldCancel`` returned True.
        """
        from .datasets import prepare_slices, split_validation
        from .model_io import DEFAULT_MODEL, load_model
        from .training import TrainConfig, Trainer, export_model

        output = self._model_output(pairs, output, variant, overwrite)
        loaded = []
        for volume_node, mask_node in pairs:
            volume = ct_from_volume_node(volume_node)
            loaded.append((volume, labels_from_segmentation(mask_node, volume_node, volume)))
        init = str(DEFAULT_MODEL) if fineTune else None
        base = load_model(init)[1] if init else None
        size = base.input_size if base else 256
        generator = base.config if base else None
        slices = prepare_slices(loaded, size)
        train, val = split_validation(slices, validationFraction, seed)
        settings = dict(variant=variant, epochs=epochs, seed=seed, input_size=size, steps_per_epoch=stepsPerEpoch)
        if generator is not None:
            settings["generator"] = generator
        if fineTune:
            settings["lr"] = 1e-4  # gentle: the shipped model is already good
        try:
            config = TrainConfig(**settings)
            run_dir = Path(tempfile.mkdtemp(prefix="LungGAN-train-"))
            trainer = Trainer(config, run_dir, device, init)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        trainingPlot = TrainingPlot.create(self.scene, output.stem) if plot else None

        def on_step(step, steps, losses):
            if shouldCancel and shouldCancel():
                raise Cancelled("training cancelled; no model was written")
            if progress:
                progress(step, steps, losses)

        def on_epoch(record):
            if trainingPlot:
                trainingPlot.add(record)
            if onEpoch:
                onEpoch(record)

        card = {"name": output.stem, "data": {"train": [v.GetName() for v, _ in pairs]}, "fine_tuned_from": init}
        try:
            best = trainer.fit(train, val, card, on_step, on_epoch)
            export_model(best, output)
        except Cancelled:
            if trainingPlot:
                trainingPlot.remove(self.scene)
            raise
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a finished or cancelled run
        self.lastPlot = trainingPlot
        return str(output)

    def startTraining(self, pairs: Sequence[tuple], variant: str = "baseline", epochs: int = 5,
                      output: str | os.PathLike | None = None, fineTune: bool = True, device: str = "auto",
                      stepsPerEpoch: int | None = None, overwrite: bool = False) -> TrainingJob:
        """Start training in a background process (pairs written to a temporary folder as NRRD)."""
        from .background import BackgroundProcess
        from .model_io import DEFAULT_MODEL, load_model

        output = self._model_output(pairs, output, variant, overwrite)
        work = Path(tempfile.mkdtemp(prefix="LungGAN-train-"))
        files = []
        for index, (volume_node, mask_node) in enumerate(pairs):
            volume = ct_from_volume_node(volume_node)
            labels = labels_from_segmentation(mask_node, volume_node, volume)
            ct_path, mask_path = work / f"ct{index}.nrrd", work / f"mask{index}.nrrd"
            sitk.WriteImage(image_from_volume_node(volume_node), str(ct_path))
            sitk.WriteImage(mask_to_image(labels, volume), str(mask_path))
            files.append((ct_path, mask_path))
        args = ["train", "--variant", variant, "--epochs", str(epochs), "--run-dir", work / "run", "-o", output,
                "--device", device, "--progress-json"]
        for ct_path, mask_path in files:
            args += ["--pair", ct_path, mask_path]
        # Validation: the last pair when there are several, else the same volume (the best epoch is then optimistic).
        args += ["--val-pair", *files[-1]]
        if stepsPerEpoch:
            args += ["--steps-per-epoch", str(stepsPerEpoch)]
        if fineTune:
            info = load_model(DEFAULT_MODEL)[1]
            args += ["--init-model", DEFAULT_MODEL, "--input-size", str(info.input_size), "--lr", "1e-4",
                     "--base-channels", str(info.config.base_channels), "--depth", str(info.config.depth)]
        if overwrite:
            args.append("--overwrite")
        return TrainingJob(self, BackgroundProcess(args), output, TrainingPlot.create(self.scene, output.stem), work=work)

    def _model_output(self, pairs: Sequence[tuple], output: str | os.PathLike | None, variant: str, overwrite: bool) -> Path:
        """Check a training request's pairs and output model path (default: a new name); create its folder."""
        if not pairs:
            raise InputError("training needs at least one (CT volume, segmentation) pair")
        output = Path(output) if output else self._new_model_path(variant)
        if output.suffix != ".safetensors":
            raise InputError(f"model file {output} must end in .safetensors")
        if output.exists() and not overwrite:
            raise OutputExistsError(f"model {output} exists: choose another name or allow overwriting")
        output.parent.mkdir(parents=True, exist_ok=True)
        return output

    @staticmethod
    def _new_model_path(variant: str) -> Path:
        folder = default_model_dir()
        n = 1
        while (folder / f"{variant}-{n}.safetensors").exists():
            n += 1
        return folder / f"{variant}-{n}.safetensors"


@dataclass
class SegmentationJob:
    """A segmentation running in a background process; the scene changes only in :meth:`finish`."""

    logic: LungGANLogic
    volumeNode: object
    process: object
    output: Path
    work: Path
    splitLungs: bool = True

    def finish(self, segmentationNode=None, existing: str = "add", createLabelmap: bool = False):
        """Load the finished result into the scene; returns the segmentation node.

        Raises:
            LungGANError: the process failed (its message) or was cancelled.
        """
        from .background import DONE

        state = self.process.wait()
        try:
            if state != DONE:
                raise (Cancelled("segmentation cancelled; nothing was changed") if self.process.cancelled
                       else LungGANError(self.process.error))
            volume = ct_from_volume_node(self.volumeNode, force=True)
            labels = mask_from_image(sitk.ReadImage(str(self.output)), volume)
        finally:
            self.cleanup()
        node, self.logic.lastLabelmapNode = write_segmentation(
            self.logic.scene, labels, volume, self.volumeNode, segmentationNode, existing, not self.splitLungs, createLabelmap
        )
        self.logic.lastFigures = self.logic.lungFigures(self.volumeNode, node)
        return node

    def cleanup(self) -> None:
        """Delete the temporary copy of the CT and the result file (the job is over)."""
        shutil.rmtree(self.work, ignore_errors=True)


@dataclass
class TrainingJob:
    """Training in a background process; :meth:`update` adds finished epochs to the plot."""

    logic: LungGANLogic
    process: object
    output: Path
    plot: TrainingPlot
    epochs: list = field(default_factory=list)

    def update(self) -> list[dict]:
        """Read new progress events; epochs go into the plot. Returns the events."""
        from types import SimpleNamespace

        events = self.process.poll()
        for event in events:
            if event.get("event") == "epoch":
                self.epochs.append(event)
                self.plot.add(SimpleNamespace(**event))
        return events

    work: Path | None = None

    def cancel(self) -> None:
        """Stop training: no model is written and the plot is removed."""
        self.process.cancel()
        self.plot.remove(self.logic.scene)
        self.cleanup()

    def cleanup(self) -> None:
        """Delete the temporary copies of the training pairs and the run folder."""
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
