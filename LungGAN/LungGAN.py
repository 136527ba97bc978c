"""LungGAN: automatic lung segmentation of chest CT in 3D Slicer.

Thin on purpose, in the shape of Slicer's scripted-module template: the module,
its parameter node, the widget (``Resources/UI/LungGAN.ui``), the logic and the
self-test. All work is done by the Slicer-free package ``LungGANLib``; its MRML
adapter ``LungGANLib.mrml`` holds the logic that the console and the tests use.
Segmentation and training run in a background process (``lunggan`` command
line) polled by a timer, so Slicer never freezes and Cancel leaves the scene
as it was.
"""

import os
import sys
import traceback

# Development mode ("Additional module paths" = this repository's LungGAN/ folder): the core is one level up.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "LungGANLib")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from typing import Annotated  # noqa: E402

import qt  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402

from LungGANLib import mrml  # noqa: E402
from LungGANLib.background import CANCELLED, DONE, RUNNING  # noqa: E402

# The registry LungGANLib.variants.VARIANTS, listed here so the module loads before PyTorch is installed.
VARIANTS = ["baseline", "basic", "product", "early-fusion", "late-fusion", "regression"]


class LungGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungGAN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LungGAN developers"]
        self.parent.helpText = (
            "Segments the right and left lung of a chest CT with LGAN (a U-Net generator trained against a "
            "Wasserstein critic), and fine-tunes the model on your own annotated scans. "
            "See the <a href='https://github.com/lunggan/SlicerLungGAN'>README</a>."
        )
        self.parent.acknowledgementText = (
            "Method: Tan et al., LGAN: Lung Segmentation in CT Scans Using Generative Adversarial Network (2020)."
        )


@parameterNodeWrapper
class LungGANParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""  # empty: the shipped model
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    splitLungs: bool = True
    fillHoles: bool = True
    createLabelmap: bool = False
    trainVariant: Annotated[str, Choice(VARIANTS)] = "regression"
    trainEpochs: Annotated[int, WithinRange(1, 500)] = 5
    fineTune: bool = True
    trainOutput: str = ""  # empty: ~/LungGAN/models/<variant>-<n>.safetensors


# Path fields synced by hand: Slicer binds a ctkPathLineEdit only to a pathlib.Path parameter,
# whose empty value shows "." and can never be emptied again.
PATH_FIELDS = {"modelPathLineEdit": "modelPath", "trainOutputPathLineEdit": "trainOutput"}


def _pathOrNone(path):
    """An empty path field means the default."""
    return str(path) if path and str(path).strip() not in ("", ".") else None


def ensureDependencies() -> bool:
    """PyTorch through the SlicerPyTorch extension, the rest with pip; False (with a message) if not possible."""
    from LungGANLib.dependencies import missing_packages, torch_available

    if not torch_available():
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("LungGAN needs PyTorch: install the 'PyTorch' extension (Extensions Manager), restart Slicer, and try again.")
            return False
        try:
            installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
        except Exception as exc:  # a failed download or pip run
            slicer.util.errorDisplay(f"Installing PyTorch failed: {exc}", detailedText=traceback.format_exc())
            return False
        if installed is None:
            slicer.util.errorDisplay("PyTorch was not installed; LungGAN cannot run without it.")
            return False
    missing = missing_packages()
    if missing:
        if not slicer.util.confirmOkCancelDisplay(f"LungGAN needs these Python packages: {', '.join(missing)}. Install them now?"):
            return False
        try:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        except Exception as exc:  # pip's failures come in many types; the user must see them, not only the console
            slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}", detailedText=traceback.format_exc())
            return False
    return True


class LungGANLogic(ScriptedLoadableModuleLogic, mrml.LungGANLogic):
    """The module's logic: the parameter node from Slicer, everything else from ``LungGANLib.mrml.LungGANLogic``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        mrml.LungGANLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return LungGANParameterNode(super().getParameterNode())


class LungGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._job = None  # the running background job (segmentation or training)
        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._poll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiPath = self.resourcePath("UI/LungGAN.ui")
        if not os.path.isfile(uiPath):  # development mode: Resources/ is beside LungGAN/
            uiPath = os.path.join(_ROOT, "Resources", "UI", "LungGAN.ui")
        uiWidget = slicer.util.loadUI(uiPath)
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # The combo boxes are filled from the parameters' Choice annotations by connectGui.
        self.ui.progressBar.hide()
        self.ui.trainProgressBar.hide()
        self.ui.figuresTableView.hide()
        self.logic = LungGANLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.recomputeFiguresButton.connect("clicked(bool)", self.onRecomputeFigures)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.trainCancelButton.connect("clicked(bool)", self.onCancel)
        for widgetName, field in PATH_FIELDS.items():
            getattr(self.ui, widgetName).connect("currentPathChanged(QString)", lambda path, f=field: self._setPath(f, path))
        self._pairs = []
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self._pairs.clear()  # their nodes are about to be removed
        self.ui.pairsListWidget.clear()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    # -- state: idle or running (one job at a time) -------------------------------------------

    def _setPath(self, field, path):
        if self._parameterNode and getattr(self._parameterNode, field) != path:
            setattr(self._parameterNode, field, path)

    def _updateButtons(self, caller=None, event=None):
        running = self._job is not None
        p = self._parameterNode
        for widgetName, field in PATH_FIELDS.items():
            widget = getattr(self.ui, widgetName)
            value = getattr(p, field) if p else ""
            if widget.currentPath != value:
                widget.currentPath = value
        self.ui.segmentButton.enabled = not running and bool(p and p.inputVolume)
        self.ui.recomputeFiguresButton.enabled = not running and bool(p and p.inputVolume and p.outputSegmentation)
        self.ui.trainButton.enabled = not running and bool(self._pairs)
        self.ui.cancelButton.enabled = running and self._job[0] == "segment"
        self.ui.trainCancelButton.enabled = running and self._job[0] == "train"

    def _start(self, kind, job, bar, status, text):
        if self._job is not None:  # one job at a time: a new one ends the old one's process tree
            self.onCancel()
        self._job = (kind, job)
        bar.setValue(0)
        bar.show()
        status.text = text
        self._timer.start()
        self._updateButtons()

    def _stop(self, message):
        kind = self._job[0]
        self._timer.stop()
        self._job = None
        (self.ui.progressBar if kind == "segment" else self.ui.trainProgressBar).hide()
        (self.ui.statusLabel if kind == "segment" else self.ui.trainStatusLabel).text = message
        self._updateButtons()

    # -- segment lungs ------------------------------------------------------------------------

    def onSegment(self):
        if not ensureDependencies():
            return
        p = self._parameterNode
        existing = "add"
        output = p.outputSegmentation
        if output and output.GetSegmentation().GetNumberOfSegments():
            box = qt.QMessageBox(qt.QMessageBox.Question, "LungGAN", f"'{output.GetName()}' already has segments.")
            add = box.addButton("Add segments", qt.QMessageBox.AcceptRole)
            replace = box.addButton("Replace lung segments", qt.QMessageBox.DestructiveRole)
            new = box.addButton("New segmentation", qt.QMessageBox.ActionRole)
            box.addButton(qt.QMessageBox.Cancel)
            box.exec_()
            clicked = box.clickedButton()
            if clicked not in (add, replace, new):
                return
            existing = "add" if clicked == add else "replace" if clicked == replace else "new"
        with slicer.util.tryWithErrorDisplay("Could not start segmentation.", waitCursor=True):
            job = self.logic.startSegmentation(p.inputVolume, _pathOrNone(p.modelPath), p.device, p.splitLungs, p.fillHoles)
            job.existing = existing
            self._start("segment", job, self.ui.progressBar, self.ui.statusLabel, "Segmenting...")

    def _poll(self):
        kind, job = self._job
        if kind == "segment":
            for event in job.process.poll():
                if event.get("event") == "progress":
                    self.ui.progressBar.setValue(int(100 * event["done"] / max(event["total"], 1)))
            state = job.process.state
            if state == RUNNING:
                return
            if state == DONE:
                p = self._parameterNode
                try:
                    node = job.finish(p.outputSegmentation, job.existing, p.createLabelmap)
                except Exception as exc:
                    self._stop(f"Failed: {exc}")
                    slicer.util.errorDisplay(f"Segmentation failed: {exc}")
                    return
                p.outputSegmentation = node
                slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
                self._showFigures()
                self._stop(f"Done: {', '.join(mrml.segment_names(node))}.")
            else:
                job.cleanup()
                self._stop("Cancelled; nothing was changed." if state == CANCELLED else f"Failed: {job.process.error}")
                if state != CANCELLED:
                    slicer.util.errorDisplay(f"Segmentation failed: {job.process.error}")
        else:
            for event in job.update():
                if event.get("event") == "step":
                    done = (event["epoch"] - 1) * event["steps"] + event["step"]
                    self.ui.trainProgressBar.setValue(int(100 * done / max(event["epochs"] * event["steps"], 1)))
                    self.ui.trainStatusLabel.text = f"Epoch {event['epoch']}/{event['epochs']}: BCE {event['bce']:.4f}"
            state = job.process.state
            if state == RUNNING:
                return
            job.cleanup()
            if state == DONE:
                self._parameterNode.modelPath = str(job.output)  # selectable for "Segment lungs" right away
                self._stop(f"Model written to {job.output}; selected for segmentation.")
            else:
                self._stop("Cancelled; no model was written." if state == CANCELLED else f"Failed: {job.process.error}")

    def _showFigures(self):
        self.ui.figuresTableView.setMRMLTableNode(self.logic.lastFiguresTable)
        self.ui.figuresTableView.show()

    def onRecomputeFigures(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not compute the lung figures.", waitCursor=True):
            self.logic.lungFigures(p.inputVolume, p.outputSegmentation)
            self._showFigures()

    def onCancel(self):
        if self._job is None:
            return
        kind, job = self._job
        if kind == "segment":
            job.process.cancel()
        else:
            job.cancel()
        self._poll()

    # -- training -----------------------------------------------------------------------------

    def onAddPair(self):
        volume, annotation = self.ui.trainVolumeSelector.currentNode(), self.ui.trainSegmentationSelector.currentNode()
        if not volume or not annotation:
            slicer.util.warningDisplay("Choose a CT volume and its lung segmentation (or labelmap) first.")
            return
        self._pairs.append((volume, annotation))
        self.ui.pairsListWidget.addItem(f"{volume.GetName()} + {annotation.GetName()}")
        self._updateButtons()

    def onRemovePair(self):
        row = self.ui.pairsListWidget.currentRow
        if row >= 0:
            self._pairs.pop(row)
            self.ui.pairsListWidget.takeItem(row)
        self._updateButtons()

    def onTrain(self):
        if not ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start training.", waitCursor=True):
            job = self.logic.startTraining(self._pairs, p.trainVariant, p.trainEpochs, _pathOrNone(p.trainOutput), p.fineTune, p.device)
            chart = job.plot.chart
            layout = slicer.app.layoutManager()
            layout.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalPlotView)
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            self._start("train", job, self.ui.trainProgressBar, self.ui.trainStatusLabel, f"Training {p.trainVariant}...")


class LungGANTest(ScriptedLoadableModuleTest):
    """What "Reload and Test" runs: segment a real chest CT and check the segments.

    The CT is ``ct/lidc-idri-0001.nii.gz`` under $LUNGGAN_DATA (the shared test data) where
    that is set, else SampleData's "CTChest". Without PyTorch and the other packages, or
    without a CT, the test is skipped, never passed.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_and_keep_existing()

    def _chestCT(self, logic):
        folder = os.environ.get("LUNGGAN_DATA")
        if folder and os.path.isfile(os.path.join(folder, "ct", "lidc-idri-0001.nii.gz")):
            return logic.loadCT(os.path.join(folder, "ct", "lidc-idri-0001.nii.gz"))
        try:
            import SampleData

            return SampleData.downloadSample("CTChest")
        except Exception as exc:  # offline, or SampleData missing
            self.skipTest(f"no chest CT: set LUNGGAN_DATA to the shared data folder, or allow SampleData's download ({exc})")

    def test_segment_and_keep_existing(self):
        from LungGANLib.dependencies import missing_packages, torch_available

        missing = missing_packages() + ([] if torch_available() else ["torch (the PyTorch extension)"])
        if missing:
            self.skipTest(f"not installed: {', '.join(missing)}; open the module and segment once to install them")
        logic = LungGANLogic()
        volume = self._chestCT(logic)
        self.delayDisplay(f"Segmenting {volume.GetName()}")
        segmentation = logic.segment(volume, device="cpu")
        self.assertEqual(mrml.segment_names(segmentation), ["right lung", "left lung"])
        segments = segmentation.GetSegmentation()
        for index, code in enumerate(("24028007", "7771000")):  # SNOMED CT Right, Left
            tag = vtk.reference("")
            segments.GetSegment(segments.GetNthSegmentID(index)).GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag)
            self.assertIn("SCT^39607008^Lung", str(tag))
            self.assertIn(f"SCT^{code}^", str(tag))
        # An adult's lung holds about 1 to 4 L; the CT may not show all of it, so only a loose range.
        for side in ("right", "left"):
            volumeMl = logic.lastFigures[f"{side}_lung_ml"]
            self.assertTrue(300 < volumeMl < 5000, f"{side} lung {volumeMl:.0f} mL")
        again = logic.segment(volume, segmentation, device="cpu")  # add, never overwrite
        self.assertIs(again, segmentation)
        self.assertEqual(mrml.segment_names(segmentation), ["right lung", "left lung", "right lung (2)", "left lung (2)"])
        self.delayDisplay("Test passed")
