"""The MRML adapter and the Slicer logic, against the PyPI package slicer-core (real MRML, no Slicer application).

Real CT from ../shared/data; the scene, nodes, segmentations, terminology and
plots are Slicer's own classes.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from field_of_view_cuts import box_inside_the_lungs

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test requirements")
import vtk  # noqa: E402  (installed with slicer-core)

from LungGANLib.slicer import mrml  # noqa: E402
from LungGANLib.slicer.background import CANCELLED, DONE, RUNNING  # noqa: E402
from LungGANLib.dependencies import missing_packages  # noqa: E402
from LungGANLib.errors import InputError, OutputExistsError  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions  # noqa: E402
from LungGANLib.segment.inference import segment as core_segment  # noqa: E402
from LungGANLib.io import load_ct  # noqa: E402
from LungGANLib.models.weights import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CIP = "fixtures/cip-ct-64/ct-64.nrrd"
CIP_MASK = "fixtures/cip-ct-64/wholeLung-64.nrrd"
MR = "fixtures/mr-not-ct.nii.gz"


@pytest.fixture
def scene():
    """A fresh MRML scene with Slicer's default colour tables (as the application has)."""
    scene = slicer.vtkMRMLScene()
    colours = slicer.vtkMRMLColorLogic()
    colours.SetMRMLScene(scene)
    yield scene
    colours.SetMRMLScene(None)
    scene.Clear(1)


def node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.mark.parametrize("path", [CIP, "ct/lung-pet-ct-dx-a0001-series3.nii.gz"])
def test_loaded_ct_matches_slicers_own_reader(scene, data, path):
    ours = mrml.LungGANLogic(scene).loadCT(data / path)
    theirs = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reader")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(data / path))
    assert storage.ReadData(theirs)
    np.testing.assert_allclose(ijk_to_ras(ours), ijk_to_ras(theirs), atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ours), slicer.util.arrayFromVolume(theirs))
    # And back: the core sees the same CT as when it reads the file itself.
    volume, direct = mrml.ct_from_volume_node(ours), load_ct(data / path)
    np.testing.assert_array_equal(volume.array, direct.array)
    assert volume.spacing == pytest.approx(direct.spacing)


def test_segment_gives_named_coded_segments_on_the_input_grid(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    seen = []
    segmentation = logic.segment(ct, device="cpu", createLabelmap=True, progress=lambda d, t: seen.append((d, t)))
    assert segmentation.IsA("vtkMRMLSegmentationNode")
    assert mrml.segment_names(segmentation) == ["right lung", "left lung"]
    assert seen and seen[-1][0] == seen[-1][1]
    # The segmentation refers to the CT and takes its geometry; it is shown in 2D and 3D.
    assert segmentation.GetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole()) == ct.GetID()
    assert segmentation.GetDisplayNode() is not None
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    terminology = slicer.vtkSlicerTerminologiesModuleLogic()
    segs = segmentation.GetSegmentation()
    for index, (side, code) in enumerate([("Right", "24028007"), ("Left", "7771000")]):
        segment = segs.GetSegment(segs.GetNthSegmentID(index))
        assert segment.GetColor() == pytest.approx(mrml.LUNG_COLOUR)
        entry = slicer.vtkSlicerTerminologyEntry()
        tag = vtk.reference("")
        assert segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag)
        assert terminology.DeserializeTerminologyEntry(str(tag), entry)
        assert (entry.GetCategoryObject().GetCodeValue(), entry.GetCategoryObject().GetCodeMeaning()) == ("123037004", "Anatomical Structure")
        assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue()) == ("SCT", "39607008")
        assert (entry.GetTypeModifierObject().GetCodeValue(), entry.GetTypeModifierObject().GetCodeMeaning()) == (code, side)
    # The labelmap has exactly the input's grid and exactly the core's labels.
    labelmap = logic.lastLabelmapNode
    assert mrml.same_geometry(labelmap, ct)
    expected = core_segment(load_ct(data / CIP), SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(mrml.labels_from_segmentation(labelmap, ct), expected)
    np.testing.assert_array_equal(mrml.labels_from_segmentation(segmentation, ct), expected)
    assert (expected == 1).sum() > 1000 and (expected == 2).sum() > 1000


def table_values(table) -> dict[str, list]:
    """A table node's columns by title."""
    t = table.GetTable()
    return {t.GetColumnName(c): [t.GetValue(r, c).ToString() if c == 0 else t.GetValue(r, c).ToDouble()
                                 for r in range(t.GetNumberOfRows())] for c in range(t.GetNumberOfColumns())}


def segment_array(segmentation, segment_id, ct) -> np.ndarray:
    """One segment as a (k, j, i) array on the CT's grid, exported on its own."""
    scene = segmentation.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, node, ct)
    array = slicer.util.arrayFromVolume(node) > 0
    scene.RemoveNode(node)
    return array


def set_segment_array(segmentation, segment_id, ct, array) -> None:
    """Replace a segment's voxels, as an editor effect would."""
    scene = segmentation.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    matrix = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, array.astype(np.uint8))
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, segmentation, ids)
    scene.RemoveNode(node)


def test_lung_figures_follow_the_segments_and_fill_one_table(scene, data):
    from LungGANLib.segment.report import lung_figures

    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    segmentation = logic.segment(ct, device="cpu")
    # Recomputed here from the CT's voxels and each segment's own labelmap, through slicer.util.
    hu = slicer.util.arrayFromVolume(ct)
    segs = segmentation.GetSegmentation()
    right_id, left_id = segs.GetNthSegmentID(0), segs.GetNthSegmentID(1)
    right, left = segment_array(segmentation, right_id, ct), segment_array(segmentation, left_id, ct)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000
    assert logic.lastFigures["right_lung_ml"] == pytest.approx(right.sum() * voxel_ml)
    assert logic.lastFigures["left_lung_mean_hu"] == pytest.approx(hu[left].mean())
    assert logic.lastFigures["total_lung_laa950_percent"] == pytest.approx(100 * (hu[right | left] < -950).mean())
    table = logic.lastFiguresTable
    assert segmentation.GetNodeReference("LungGANFigures") is table
    values = table_values(table)
    assert list(values) == ["Measurement", "Right lung", "Left lung", "Both lungs"]
    assert values["Measurement"][0] == "Volume (mL)"
    assert values["Right lung"][0] == pytest.approx(right.sum() * voxel_ml, abs=0.01)
    # A radiologist erases the right lung's upper half: the figures and the same table follow.
    edited = right.copy()
    edited[edited.shape[0] // 2:] = False
    set_segment_array(segmentation, right_id, ct, edited)
    assert segment_array(segmentation, right_id, ct).sum() == edited.sum()
    tables = scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems()
    figures = logic.lungFigures(ct, segmentation)
    assert figures["right_lung_ml"] == pytest.approx(edited.sum() * voxel_ml)
    assert figures == lung_figures(hu, edited.astype(np.uint8) + 2 * left, voxel_ml)
    assert logic.lastFiguresTable is table and scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == tables
    assert table_values(table)["Right lung"][0] == pytest.approx(edited.sum() * voxel_ml, abs=0.01)


def test_lung_figures_come_from_the_last_run(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    segmentation = logic.segment(ct, device="cpu", method="classical")
    logic.segment(ct, segmentation, device="cpu", method="classical", splitLungs=False)  # added beside the first
    assert logic.lastFigures["right_lung_ml"] is None and logic.lastFigures["total_lung_ml"] > 0
    split = logic.segment(ct, segmentation, device="cpu", method="classical")  # and split again after it
    assert split is segmentation and logic.lastFigures["right_lung_ml"] > 0


def test_lung_figures_need_lung_segments_made_by_lunggan(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    mine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    mine.GetSegmentation().AddEmptySegment("", "right lung")
    with pytest.raises(InputError, match="no lung segments made by LungGAN"):
        logic.lungFigures(ct, mine)


def linear_transform(scene, translation=(0.0, 0.0, 0.0), degrees_about_z=0.0, parent=None):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform = vtk.vtkTransform()
    transform.Translate(*translation)
    transform.RotateZ(degrees_about_z)
    node.SetMatrixTransformToParent(transform.GetMatrix())
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def world_labels(segmentation, ct) -> np.ndarray:
    """The segments exported onto the CT's grid as it lies in the world (a probe volume under no transform)."""
    scene = segmentation.GetScene()
    to_world = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(ct.GetParentTransformNode(), None, to_world)
    ijk_to_ras = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(ijk_to_ras)
    vtk.vtkMatrix4x4.Multiply4x4(to_world, ijk_to_ras, ijk_to_ras)
    probe = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "probe")
    probe.SetIJKToRASMatrix(ijk_to_ras)
    slicer.util.updateVolumeFromArray(probe, np.zeros(slicer.util.arrayFromVolume(ct).shape, np.uint8))
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    segmentation.GetSegmentation().GetSegmentIDs(ids)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, label, probe)
    array = slicer.util.arrayFromVolume(label).copy()
    scene.RemoveNode(label)
    scene.RemoveNode(probe)
    return array


def dice(a, b) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("where", ["translated", "rotated", "nested"])
def test_lungs_land_on_the_ct_in_the_world_whatever_its_transform(scene, data, where):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    plain = mrml.labels_from_segmentation(logic.segment(ct, device="cpu", method="classical"), ct)
    if where == "translated":
        transform = linear_transform(scene, (50.0, -20.0, 10.0))
    elif where == "rotated":
        transform = linear_transform(scene, degrees_about_z=20.0)
    else:
        transform = linear_transform(scene, degrees_about_z=-15.0, parent=linear_transform(scene, (30.0, 0.0, -40.0)))
    ct.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = logic.segment(ct, device="cpu", method="classical", createLabelmap=True)
    assert segmentation.GetTransformNodeID() == transform.GetID()
    assert logic.lastLabelmapNode.GetTransformNodeID() == transform.GetID()
    # Same voxels in the CT's own frame, and in the world on the CT as it lies there.
    np.testing.assert_array_equal(mrml.labels_from_segmentation(logic.lastLabelmapNode, ct), plain)
    expected = slicer.util.arrayFromVolume(logic.lastLabelmapNode)
    found = world_labels(segmentation, ct)
    for value in (1, 2):
        assert dice(found == value, expected == value) > (0.999 if where == "translated" else 0.97), value


def test_a_users_segmentation_under_another_transform_is_refused_and_left_alone(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    ct.SetAndObserveTransformNodeID(linear_transform(scene, (40.0, 0.0, 0.0)).GetID())
    theirs = linear_transform(scene, (0.0, 25.0, 0.0))
    mine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    mine.SetAndObserveTransformNodeID(theirs.GetID())
    mrml.ensure_segmentation_converters()
    mine.GetSegmentation().AddEmptySegment("", "my nodule")
    before = node_ids(scene)
    for existing in ("add", "replace"):
        with pytest.raises(InputError, match="under another transform"):
            logic.segment(ct, mine, device="cpu", method="classical", onExisting=existing)
    assert mine.GetTransformNodeID() == theirs.GetID()  # never re-parented
    assert mrml.segment_names(mine) == ["my nodule"]
    assert node_ids(scene) == before
    # "new" leaves it alone and makes a node in the CT's frame.
    made = logic.segment(ct, mine, device="cpu", method="classical", onExisting="new")
    assert made is not mine and made.GetTransformNodeID() == ct.GetTransformNodeID()


def test_an_existing_segmentation_is_never_overwritten(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    mine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my work")
    mine.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    mrml.ensure_segmentation_converters()
    tumour = mine.GetSegmentation().AddEmptySegment("tumour", "tumour")
    drawn = np.zeros(slicer.util.arrayFromVolume(ct).shape, dtype=np.uint8)
    drawn[20:24, 30:34, 30:34] = 1
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.util.updateVolumeFromArray(label, drawn)
    label.SetIJKToRASMatrix(_matrix(ct))
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(tumour)
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, mine, ids)
    scene.RemoveNode(label)

    def tumour_voxels(node) -> int:
        one = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        keep = vtk.vtkStringArray()
        keep.InsertNextValue(tumour)
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, keep, one, ct)
        count = int((slicer.util.arrayFromVolume(one) > 0).sum())
        scene.RemoveNode(one)
        return count

    assert tumour_voxels(mine) == 64
    assert logic.segment(ct, mine, device="cpu", onExisting="add") is mine
    assert mrml.segment_names(mine) == ["tumour", "right lung", "left lung"]
    logic.segment(ct, mine, device="cpu", onExisting="add")
    assert mrml.segment_names(mine) == ["tumour", "right lung", "left lung", "right lung (2)", "left lung (2)"]
    logic.segment(ct, mine, device="cpu", onExisting="replace")  # our lung segments only
    assert mrml.segment_names(mine) == ["tumour", "right lung", "left lung"]
    other = logic.segment(ct, mine, device="cpu", onExisting="new")
    assert other is not mine and mrml.segment_names(mine) == ["tumour", "right lung", "left lung"]
    assert tumour_voxels(mine) == 64


def _matrix(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_cancel_leaves_the_scene_as_it_was(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    before = node_ids(scene)
    calls = []
    with pytest.raises(mrml.Cancelled, match="nothing was changed"):
        logic.segment(ct, device="cpu", progress=lambda d, t: calls.append(d), shouldCancel=lambda: len(calls) >= 1)
    assert calls and node_ids(scene) == before


def test_bad_input_gives_a_clear_error(scene, data):
    logic = mrml.LungGANLogic(scene)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="holds no image: load a CT first"):
        logic.segment(empty)
    with pytest.raises(InputError, match="is it an MR"):
        logic.loadCT(data / MR)


def test_segmentation_in_a_background_process(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    before = node_ids(scene)
    job = logic.startSegmentation(ct, device="cpu")
    events = []
    deadline = time.time() + 240
    while job.process.state == RUNNING and time.time() < deadline:
        events += job.process.poll()
        time.sleep(0.1)
    events += job.process.poll()
    assert job.process.state == DONE, job.process.error
    assert node_ids(scene) == before  # nothing changes until finish()
    assert [e["event"] for e in events][-1] == "done" and any(e["event"] == "progress" for e in events)
    segmentation = job.finish()
    assert segmentation is job.segmentation
    assert job.status == f"Done: right lung, left lung. {job.review['flagged_slices']} slices flagged for review."
    assert not job.work.exists()  # the temporary copy of the CT is gone
    assert mrml.segment_names(segmentation) == ["right lung", "left lung"]
    assert job.progress == 1.0 and job.figuresTable is not None
    assert job.figures == logic.lungFigures(ct, segmentation, table=False)
    expected = core_segment(load_ct(data / CIP), SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(mrml.labels_from_segmentation(segmentation, ct), expected)

    cancelled = logic.startSegmentation(ct, device="cpu")
    ids = node_ids(scene)
    cancelled.process.cancel()
    assert cancelled.process.state == CANCELLED
    with pytest.raises(mrml.Cancelled):
        cancelled.finish()
    assert node_ids(scene) == ids


@pytest.mark.parametrize("model", [None, "mine.safetensors"])
@pytest.mark.parametrize("splitLungs, fillHoles, masses", [(True, True, False), (False, False, True), (True, False, True)])
def test_a_background_segmentation_runs_the_command_line_with_the_options_of_segment(model, splitLungs, fillHoles, masses):
    """What ``startSegmentation`` runs is a command line the CLI parses into the options ``segment`` uses in Slicer."""
    from LungGANLib.cli import segment_options
    from LungGANLib.cli_parser import build_parser

    review = Path("work/review.json") if masses else None
    args = mrml.segment_arguments(Path("ct.nrrd"), Path("lungs.nrrd"), "cpu", model, splitLungs, fillHoles, masses, review)
    parsed = build_parser().parse_args([str(a) for a in args])
    assert segment_options(parsed) == SegmentOptions(model=model, device="cpu", single_label=not splitLungs,
                                                     fill_holes=fillHoles, masses=masses)
    assert parsed.input == ["ct.nrrd"] and parsed.output == "lungs.nrrd" and parsed.progress_json
    assert parsed.review == (str(review) if review else None)


def test_asked_for_masses_slicer_joins_what_the_command_line_joins(scene, data, caplog):
    """Lung-PET-CT-Dx A0001 series 2, whose tumour abuts the mediastinum: ``segment(masses=True)`` in a scene gives
    the labels of the core's ``--masses``, a mass joined among them."""
    import logging

    from LungGANLib.evaluate.references import case_by_name

    case = case_by_name("lung-pet-ct-dx-a0001-series2")
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / case.ct)
    with caplog.at_level(logging.INFO, logger="LungGANLib.segment.inference"):
        segmentation = logic.segment(ct, device="cpu", masses=True)
    assert "mL of masses the lesion model finds joined the lungs" in caplog.text
    expected = core_segment(mrml.ct_from_volume_node(ct), SegmentOptions(device="cpu", masses=True))
    np.testing.assert_array_equal(mrml.labels_from_segmentation(segmentation, ct), expected)


def test_background_process_reports_the_cli_error(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    job = logic.startSegmentation(ct, model=str(data / "README.md"), device="cpu")
    assert job.process.wait(120) == "failed"
    assert "README.md" in job.process.error
    with pytest.raises(mrml.LungGANError):
        job.finish()


@pytest.fixture
def training_pairs(scene, data):
    """Two real (CT volume node, segmentation node) pairs with human or reference lung masks."""
    logic = mrml.LungGANLogic(scene)
    pairs = []
    for ct_path, mask_path in [(data / CIP, data / CIP_MASK), (data / "ct/elastix-00.nii.gz", REPO / "Testing/Data/ReferenceMasks/elastix-00.nii.gz")]:
        ct = logic.loadCT(ct_path)
        volume = mrml.ct_from_volume_node(ct)
        from LungGANLib.io import mask_from_image

        labels = mask_from_image(sitk.ReadImage(str(mask_path)), volume)
        segmentation, _ = mrml.write_segmentation(scene, labels, volume, ct)
        pairs.append((ct, segmentation))
    return logic, pairs


def test_train_from_two_volume_segmentation_pairs(training_pairs, tmp_path):
    logic, pairs = training_pairs
    steps, epochs = [], []
    output = tmp_path / "mine.safetensors"
    path = logic.train(pairs, variant="regression", epochs=2, output=output, stepsPerEpoch=2, device="cpu",
                       progress=lambda s, n, losses: steps.append((s, n, losses.critic)), onEpoch=epochs.append)
    assert path == str(output) and output.is_file()
    generator, info = load_model(output)
    assert info.card["variant"] == "regression" and info.card["fine_tuned_from"].endswith("lunggan.safetensors")
    assert info.card["training"] == logic.trainingConfig("regression", 2, True, 2)[0].to_dict()
    assert [s[:2] for s in steps] == [(1, 2), (2, 2), (1, 2), (2, 2)]
    assert all(critic != 0.0 for _, _, critic in steps)  # the critic trained
    assert [r.epoch for r in epochs] == [1, 2]
    table = logic.lastPlot.table.GetTable()
    assert table.GetNumberOfRows() == 2 and table.GetValue(1, 0).ToDouble() == 2.0
    assert table.GetValue(1, 2).ToDouble() == pytest.approx(epochs[1].val_dice)
    assert logic.lastPlot.chart.GetNumberOfPlotSeriesNodes() == 3
    # The new model segments right away.
    segmentation = logic.segment(pairs[0][0], model=path, device="cpu")
    assert mrml.segment_names(segmentation) == ["right lung", "left lung"]
    with pytest.raises(OutputExistsError, match="exists"):
        logic.train(pairs, epochs=1, output=output)


def test_cancel_training_writes_nothing(training_pairs, tmp_path):
    logic, pairs = training_pairs
    scene = logic.scene
    before = node_ids(scene)
    output = tmp_path / "cancelled.safetensors"
    with pytest.raises(mrml.Cancelled):
        logic.train(pairs, epochs=3, output=output, device="cpu", stepsPerEpoch=2, shouldCancel=lambda: True)
    assert not output.exists() and node_ids(scene) == before


def run_job(job, timeout: float) -> str:
    """What the widget's timer does with any job: poll, show progress, finish; returns the line it shows."""
    seen = []
    deadline = time.time() + timeout
    while job.state == RUNNING and time.time() < deadline:
        job.poll()
        seen.append(job.progress)
        time.sleep(0.2)
    job.poll()
    assert seen == sorted(seen) and 0.0 <= seen[0] and seen[-1] <= 1.0  # progress only goes forward
    job.finish()
    return job.status


def test_training_in_a_background_process_uses_the_settings_of_training_in_slicer(training_pairs, tmp_path):
    logic, pairs = training_pairs
    output = tmp_path / "background.safetensors"
    job = logic.startTraining(pairs, variant="basic", epochs=2, output=output, stepsPerEpoch=1, device="cpu")
    config, init = logic.trainingConfig("basic", 2, True, 1)
    # One set of settings, handed over as a file: the shipped model's whole architecture, not a few flags.
    handed = json.loads((job.work / "config.json").read_text())
    assert handed == config.to_dict()
    shipped = load_model(init)[1].config
    assert handed["generator"] == shipped.to_dict() and handed["input_size"] == load_model(init)[1].input_size
    assert run_job(job, 400) == f"Model written to {output}; selected for segmentation."
    assert job.state == DONE and not job.work.exists()
    card = load_model(output)[1].card
    assert card["variant"] == "basic" and card["training"] == config.to_dict()
    assert [e["epoch"] for e in job.epochs] == [1, 2] and job.progress == 1.0
    assert job.plot.table.GetTable().GetNumberOfRows() == 2
    # The same validation rule as in-process training: a seeded share of the slices held out.
    from LungGANLib.train.datasets import VALIDATION_FRACTION

    assert card["data"]["validation"] == [f"{VALIDATION_FRACTION:.0%} of the training slices held out (seed 0)"]


def test_old_names_still_work_for_one_release(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    mine = logic.segment(ct, device="cpu", method="classical")
    with pytest.warns(DeprecationWarning, match="'existing' is now 'onExisting'"):
        assert logic.segment(ct, mine, device="cpu", method="classical", existing="replace") is mine
    assert mrml.segment_names(mine) == ["right lung", "left lung"] and mrml.EXISTING == mrml.ON_EXISTING
    job = logic.startSegmentation(ct, device="cpu")
    job.process.wait(240)
    with pytest.warns(DeprecationWarning, match="finish\\(\\) arguments go"):
        assert job.finish(mine, "replace") is mine  # the old way to say where the segments go
    assert mrml.segment_names(mine) == ["right lung", "left lung"]
    import SimpleITK as sitk_

    from LungGANLib.io import volume_from_image

    holder = [sitk_.ReadImage(str(data / CIP))]
    assert volume_from_image(holder).array.shape == (79, 64, 64) and holder == []


def test_cancelling_a_background_training_writes_no_model_and_removes_its_plot(training_pairs, tmp_path):
    logic, pairs = training_pairs
    scene = logic.scene
    before = node_ids(scene)
    output = tmp_path / "cancelled.safetensors"
    job = logic.startTraining(pairs, epochs=50, output=output, device="cpu")
    assert node_ids(scene) != before  # the plot
    job.cancel()
    assert job.state == CANCELLED and not job.work.exists()
    with pytest.raises(mrml.Cancelled, match="training cancelled; no model was written"):
        job.finish()
    assert node_ids(scene) == before and not output.exists()


#: Slicer API the oldest supported release (5.8) lacks, with the release that added it
#: (checked in Slicer's source: vtkSegment's terminology accessors came in March 2025, 5.10).
NEWER_THAN_5_8 = {"SetTerminology": "5.10", "GetTerminology": "5.10"}


def test_no_call_needs_a_slicer_newer_than_5_8():
    import ast

    calls = []
    for path in [*(REPO / "LungGANLib").rglob("*.py"), *(REPO / "LungGAN").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in NEWER_THAN_5_8:
                calls.append(f"{path.relative_to(REPO)}:{node.lineno} {node.func.attr} (Slicer {NEWER_THAN_5_8[node.func.attr]})")
    assert calls == []


def test_every_widget_the_module_uses_is_in_the_ui_file():
    module = (REPO / "LungGAN" / "LungGAN.py").read_text()
    panel = (REPO / "LungGANLib" / "slicer" / "widget.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", panel))
    tree = ET.parse(REPO / "Resources" / "UI" / "LungGAN.ui")
    widgets = {w.get("name"): w for w in tree.iter("widget")}
    assert used and used <= set(widgets), sorted(used - set(widgets))
    # Widgets bound to the parameter node name its fields.
    fields = set(re.findall(r"^    (\w+): ", module.split("class LungGANParameterNode")[1].split("\n\n\n")[0], re.M))
    bound = {p.find("string").text for w in widgets.values() for p in w.findall("property") if p.get("name") == "SlicerParameterName"}
    # Path fields are synced by hand (an empty pathlib.Path shows "."): plain strings, on path line edits.

    from LungGANLib.slicer.fields import PATH_FIELDS as by_hand

    assert "PATH_FIELDS" in panel
    assert bound | set(by_hand.values()) == fields and not bound & set(by_hand.values())
    assert all(widgets[name].get("class") == "ctkPathLineEdit" for name in by_hand)
    assert all(re.search(rf"^    {field}: str = \"\"", module, re.M) for field in by_hand.values())
    # The module lists the variants from the torch-free config (PyTorch may not be installed yet), the registry too.
    from LungGANLib.config import VARIANT_NAMES
    from LungGANLib.train.variants import VARIANTS

    assert "Choice(list(VARIANT_NAMES))" in module and tuple(VARIANTS) == VARIANT_NAMES


def test_missing_packages_are_named_for_pip():
    assert missing_packages({"numpy": "numpy>=1.24", "no_such_package_xyz": "no-such-package-xyz>=1"}) == ["no-such-package-xyz>=1"]


def test_the_packages_slicer_installs_are_the_ones_pyproject_needs():
    """What the module pip-installs in Slicer equals pyproject's dependencies, less PyTorch (SlicerPyTorch's) and
    highdicom (only the command line's DICOM SEG output uses it)."""
    import tomllib

    from LungGANLib.dependencies import REQUIRED

    needed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {re.split(r"[<>=!~ ]", d)[0].lower(): d for d in needed}
    assert sorted(REQUIRED.values()) == sorted(d for name, d in by_name.items() if name not in ("torch", "highdicom"))


def test_readme_console_example_runs_as_written(monkeypatch, scene, tmp_path):
    """The README's Python-console example, under slicer-core with slicer.mrmlScene set as the application would."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- run: test_readme_console_example_runs_as_written -->")[1].split("```python")[1].split("```")[0]
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(mrml, "default_model_dir", lambda: tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    segmentation, model = namespace["segmentation"], namespace["model"]
    assert mrml.segment_names(segmentation) == ["right lung", "left lung"]
    assert Path(model).parent == tmp_path and Path(model).is_file()


def test_what_the_module_imports_needs_no_package_slicer_lacks():
    """LungGAN.py's imports of LungGANLib (module level, the dependency check, the self-test) load with only what
    Slicer ships (numpy, SimpleITK, VTK, slicer): PyTorch, scikit-image and the rest come after the user agreed."""
    import ast
    import subprocess
    import sys

    modules = set()
    # The module file, and the panel it loads in setup() (which needs Qt, so its own imports are checked instead).
    for path, package in ((REPO / "LungGAN" / "LungGAN.py", ""), (REPO / "LungGANLib" / "slicer" / "widget.py", "LungGANLib.slicer")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            if module.startswith("LungGANLib"):
                for alias in node.names:  # "from LungGANLib.slicer import mrml" imports the module LungGANLib.slicer.mrml
                    name = f"{module}.{alias.name}"
                    is_module = (REPO / (name.replace(".", "/") + ".py")).is_file()
                    modules.add(name if is_module else module)
    modules = sorted(modules - {"LungGANLib.slicer.widget"})
    assert "LungGANLib.slicer.mrml" in modules and "LungGANLib.dependencies" in modules
    blocked = ["torch", "skimage", "scipy", "safetensors", "tqdm", "matplotlib", "highdicom", "pydicom"]
    code = (
        "import importlib, importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        f"    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError(f'{name} is not in Slicer until the user installs it')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_command_line_and_slicer_build_the_same_training_config(tmp_path):
    """Fine-tuning asked for in Slicer and the same settings typed as lunggan train's options (or handed over as the
    background process's --config file) give one TrainConfig, field for field."""
    from LungGANLib.cli_parser import build_parser
    from LungGANLib.train_command import config_from_args

    config, init = mrml.LungGANLogic.trainingConfig("basic", 2, True, 1, seed=4)
    info = load_model(init)[1]
    typed = ["train", "--variant", "basic", "--epochs", "2", "--steps-per-epoch", "1", "--seed", "4", "--lr", "1e-4",
             "--input-size", str(info.input_size), "--base-channels", str(info.config.base_channels),
             "--depth", str(info.config.depth), "--norm", info.config.norm, "--run-dir", str(tmp_path / "run"),
             "-o", str(tmp_path / "m.safetensors")]
    assert config_from_args(build_parser().parse_args(typed)) == config
    settings = tmp_path / "config.json"
    settings.write_text(json.dumps(config.to_dict()))
    handed = build_parser().parse_args(["train", "--config", str(settings), "--run-dir", str(tmp_path / "run"),
                                        "-o", str(tmp_path / "m.safetensors")])
    assert config_from_args(handed) == config
    assert config_from_args(build_parser().parse_args(typed[:-2] + ["--lr", "1e-3", "-o", "x.safetensors"])) != config


# -- the panel's fields, figures and Cancel, as the widget uses them ---------------------------------


def test_a_cleared_or_suffixless_path_field_reaches_the_parameter_node():
    """CTK never signals an empty field or a path without '.safetensors'; the panel reads the text itself."""
    from types import SimpleNamespace

    from LungGANLib.slicer.fields import PATH_FIELDS, sync_path

    node = SimpleNamespace(modelPath="/models/trained.safetensors", trainOutput="")
    assert sync_path(node, "modelPath", "") is None and node.modelPath == ""  # cleared: the shipped model
    assert sync_path(node, "modelPath", " /models/mine ") == "/models/mine" and node.modelPath == "/models/mine"
    assert sync_path(node, "trainOutput", None) is None and node.trainOutput == ""
    assert sync_path(None, "modelPath", "/m.safetensors") == "/m.safetensors"  # no parameter node yet (scene closing)
    assert set(PATH_FIELDS.values()) == {"modelPath", "trainOutput"}
    panel = (REPO / "LungGANLib" / "slicer" / "widget.py").read_text()
    # Both buttons read their field as it stands, and the inner line edit's every change is followed.
    assert 'self._fieldPath("modelPathLineEdit")' in panel and 'self._fieldPath("trainOutputPathLineEdit")' in panel
    assert "\"textChanged(QString)\"" in panel and "connect(\"currentPathChanged" not in panel


def test_the_widget_offers_its_logic_as_slicer_util_getmodulelogic_reads_it():
    import ast

    tree = ast.parse((REPO / "LungGAN" / "LungGAN.py").read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LungGANWidget")
    setup = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "setup")
    assigned = {t.attr for n in ast.walk(setup) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Attribute)}
    assert "logic" in assigned  # getModuleLogic returns getModuleGui(name).logic
    panel_call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LungGANPanel")
    assert ast.unparse(panel_call.args[1]) == "self.logic"  # the panel works on that same logic


def test_recomputed_figures_use_the_ct_the_segmentation_was_made_on(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP, name="patient A")
    segmentation = logic.segment(ct, device="cpu", method="classical")
    own = logic.lungFigures(ct, segmentation, table=False)
    other = logic.loadCT(data / CIP, name="patient B")
    array = slicer.util.arrayFromVolume(other)
    array += 200  # another CT of the same grid: every density differs
    slicer.util.arrayFromVolumeModified(other)
    again = logic.lungFigures(other, segmentation)  # the user has patient B selected now
    assert again == own and logic.lastFiguresVolume is ct
    assert logic.lungFigures(None, segmentation, table=False) == own


def test_cancel_pressed_after_the_job_finished_keeps_its_result(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    job = logic.startSegmentation(ct, device="cpu")
    job.process.wait(300)
    assert job.state == DONE
    job.cancel()  # the user clicks Cancel before the panel's timer has seen the end
    segmentation = job.finish()
    assert mrml.segment_names(segmentation) == ["right lung", "left lung"]
    assert job.status.startswith("Finished before Cancel was pressed. Done:") and not job.work.exists()


def test_cancel_without_waiting_returns_at_once_and_the_tree_ends_behind_it(scene, data):
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / "ct/lidc-idri-0002.nii.gz")
    before = node_ids(scene)
    job = logic.startSegmentation(ct, device="cpu")
    while not any(e.get("event") == "progress" for e in job.process.poll()):
        assert job.state == RUNNING
        time.sleep(0.1)
    job.cancel(wait=False)  # what the panel does: no waiting on the GUI thread
    assert job.process.cancelled
    deadline = time.time() + 30
    while job.state == RUNNING and time.time() < deadline:  # the panel's timer, polling
        time.sleep(0.1)
    assert job.state == CANCELLED
    with pytest.raises(mrml.Cancelled):
        job.finish()
    assert node_ids(scene) == before and not job.work.exists()


@pytest.mark.parametrize("version, old", [("2.13.0+cpu", False), ("2.2.0rc1", False), ("2.1.2", True), ("1.13.1+cu117", True)])
def test_a_pytorch_older_than_lunggan_needs_is_named(version, old):
    from LungGANLib.dependencies import TORCH_REQUIREMENT, torch_too_old

    message = torch_too_old(version)
    assert (message is not None) == old
    if old:
        assert version in message and TORCH_REQUIREMENT in message


def test_the_status_line_gives_the_flagged_slices_and_the_whole_scans_flags():
    from LungGANLib.segment.fallback import view_cut_text
    from LungGANLib.slicer.mrml_review import review_status

    assert review_status({"flagged_slices": 7, "scan_flags": []}) == " 7 slices flagged for review."
    cut = view_cut_text(40, 120)
    said = review_status({"flagged_slices": 3, "scan_flags": ["only the left lung was found", cut]})
    assert said == f" 3 slices flagged for review. Only the left lung was found. T{cut[1:]}."
    # A cancelled job's message, as the panel shows it: one full stop, whether the message ends with one or not.
    from LungGANLib.slicer.mrml_review import as_sentence

    assert as_sentence("segmentation cancelled; nothing was changed") == "Segmentation cancelled; nothing was changed."
    assert as_sentence("Model written to x.safetensors.") == "Model written to x.safetensors."


def test_a_background_segmentations_warnings_reach_its_status_line(scene, data, tmp_path):
    """cip-ct-64 cut 5 mm inside its lungs on every side: the field of view cuts the lungs. The warning (also a
    whole-scan flag of the review) is said once, without the temporary copy's name."""
    from LungGANLib.segment.fallback import view_cut_text

    image, ref = sitk.ReadImage(str(data / CIP)), sitk.GetArrayFromImage(sitk.ReadImage(str(data / CIP_MASK)))
    rows, cols = box_inside_the_lungs(ref, image.GetSpacing()[0])
    path = tmp_path / "cut.nrrd"
    cut_image = image[cols, rows, :]  # SimpleITK indexes (x, y, z)
    sitk.WriteImage(cut_image, str(path))
    logic = mrml.LungGANLogic(scene)
    node = logic.loadCT(path)
    plain = logic.startSegmentation(node, device="cpu", review=False)
    run_job(plain, 300)
    cut = next(w for w in plain.warnings if w.startswith("the field of view cuts the lungs on"))
    assert str(plain.work) not in " ".join(plain.warnings)
    slices = int(cut.split(" on ")[1].split(" of ")[0])
    assert cut == view_cut_text(slices, image.GetSize()[2]) and 0 < slices < image.GetSize()[2]
    assert plain.review is None and f"T{cut[1:]}." in plain.status  # from the warning alone
    reviewed = logic.startSegmentation(node, device="cpu")
    run_job(reviewed, 300)
    assert cut in reviewed.review["scan_flags"] and reviewed.status.count(f"T{cut[1:]}.") == 1  # said once


def test_a_background_segmentation_brings_its_review_as_a_table_kept_with_the_segmentation(scene, data):
    from LungGANLib.slicer.fields import REVIEW_COLUMNS, REVIEW_TABLE_REFERENCE
    from LungGANLib.slicer.mrml_review import flagged_slices, jump_to_slice, slice_center

    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / CIP)
    job = logic.startSegmentation(ct, device="cpu")
    run_job(job, 300)
    table = job.segmentation.GetNodeReference(REVIEW_TABLE_REFERENCE)
    assert table is job.reviewTable and table.GetTable().GetNumberOfColumns() == len(REVIEW_COLUMNS)
    flagged = [s for s in job.review["slices"] if s["flags"]]
    assert flagged_slices(table) == [s["index"] for s in flagged]  # most suspicious first
    assert f"{job.review['flagged_slices']} slices flagged for review" in job.status
    # The same review from the logic, on the segmentation as it is now (its K indices fit the CT).
    again = logic.reviewSlices(ct, job.segmentation)
    assert [s["index"] for s in again["slices"]] == [s["index"] for s in job.review["slices"]]
    assert logic.lastReviewTable is table  # reused, not a second table
    dims = ct.GetImageData().GetDimensions()
    assert all(0 <= s["index"] < dims[2] for s in again["slices"])
    # A click jumps every slice view to the middle of that slice.
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetOrientationToAxial()
    point = jump_to_slice(scene, ct, flagged_slices(table)[0])
    assert point == slice_center(ct, flagged_slices(table)[0])
    offset = red.GetSliceToRAS()
    assert [offset.GetElement(r, 3) for r in range(3)] == pytest.approx(list(point), abs=1e-3)
