"""The Slicer module's panel: what its buttons do (Qt; imported only inside Slicer, by ``LungGAN.py``).

The panel fills the module's widget from ``Resources/UI/LungGAN.ui``, binds it to the
parameter node, and runs one background job at a time (:mod:`LungGANLib.slicer.jobs`):
segmenting or training, polled by a timer through the jobs' one interface. The work
itself is the logic's (:class:`LungGANLib.slicer.mrml.LungGANLogic`); nothing here touches
arrays or files.
"""

import traceback

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from .background import RUNNING
from .mrml_nodes import Cancelled

#: Path fields synced by hand: Slicer binds a ctkPathLineEdit only to a pathlib.Path parameter,
#: whose empty value shows "." and can never be emptied again.
PATH_FIELDS = {"modelPathLineEdit": "modelPath", "trainOutputPathLineEdit": "trainOutput"}


def pathOrNone(path):
    """An empty path field means the default."""
    return str(path) if path and str(path).strip() not in ("", ".") else None


def ensureDependencies() -> bool:
    """PyTorch through the SlicerPyTorch extension, the rest with pip; False (with a message) if not possible."""
    from ..dependencies import missing_packages, torch_available

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


def askSegmentationMode(segmentationNode):
    """How to treat a segmentation that already has segments: ``add``, ``replace``, ``new``; None: cancel."""
    if not segmentationNode or not segmentationNode.GetSegmentation().GetNumberOfSegments():
        return "add"
    box = qt.QMessageBox(qt.QMessageBox.Question, "LungGAN", f"'{segmentationNode.GetName()}' already has segments.")
    choices = [
        (box.addButton("Add segments", qt.QMessageBox.AcceptRole), "add"),
        (box.addButton("Replace lung segments", qt.QMessageBox.DestructiveRole), "replace"),
        (box.addButton("New segmentation", qt.QMessageBox.ActionRole), "new"),
    ]
    box.addButton(qt.QMessageBox.Cancel)
    box.exec_()
    clicked = box.clickedButton()  # compared, not hashed: PythonQt may wrap the same button anew
    return next((mode for button, mode in choices if button == clicked), None)


class LungGANPanel(VTKObservationMixin):
    """The module panel's behaviour.

    Args:
        widget: the module's ``ScriptedLoadableModuleWidget`` (its layout, resources and state).
        logic: the module's logic (``getParameterNode()`` gives the typed parameter node).
        uiPath: the ``.ui`` file.
    """

    def __init__(self, widget, logic, uiPath):
        VTKObservationMixin.__init__(self)
        self.widget, self.logic = widget, logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the running job, and where it shows: (bar, label, cancel button, what to do after)
        self._shows = None
        self._pairs = []
        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._poll)
        uiWidget = slicer.util.loadUI(uiPath)
        widget.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # The combo boxes are filled from the parameters' Choice annotations by connectGui.
        for hidden in (self.ui.progressBar, self.ui.trainProgressBar, self.ui.figuresTableView):
            hidden.hide()
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
        self.initializeParameterNode()

    # -- the parameter node and the scene ------------------------------------------------------

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

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
        if self.widget.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

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
        for button in (self.ui.cancelButton, self.ui.trainCancelButton):
            button.enabled = running and button is self._shows[2]

    # -- one job at a time, whatever it does --------------------------------------------------

    def _start(self, job, bar, label, cancelButton, after=None):
        """Run ``job`` (see :mod:`LungGANLib.slicer.jobs`), showing it in ``bar`` and ``label``; ``after(job)`` once done."""
        if self._job is not None:  # a new job ends the old one's process tree
            self.onCancel()
        self._job, self._shows = job, (bar, label, cancelButton, after)
        bar.setValue(0)
        bar.show()
        label.text = job.status
        self._timer.start()
        self._updateButtons()

    def _poll(self):
        job = self._job
        bar, label, _, after = self._shows
        job.poll()
        bar.setValue(int(100 * job.progress))
        label.text = job.status
        if job.state == RUNNING:
            return
        try:
            job.finish()
        except Cancelled as exc:
            self._stop(f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
            return
        except Exception as exc:  # the process's own message, or a failure putting the result into the scene
            self._stop(f"Failed: {exc}")
            slicer.util.errorDisplay(f"LungGAN failed: {exc}")
            return
        self._stop(job.status)
        if after:
            after(job)

    def _stop(self, message):
        bar, label, _, _ = self._shows
        self._timer.stop()
        self._job = None
        bar.hide()
        label.text = message
        self._updateButtons()

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self._poll()

    # -- segment lungs ------------------------------------------------------------------------

    def onSegment(self):
        if not ensureDependencies():
            return
        p = self._parameterNode
        mode = askSegmentationMode(p.outputSegmentation)
        if mode is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not start segmentation.", waitCursor=True):
            job = self.logic.startSegmentation(p.inputVolume, pathOrNone(p.modelPath), p.device, p.splitLungs, p.fillHoles,
                                               p.outputSegmentation, mode, p.createLabelmap)
            self._start(job, self.ui.progressBar, self.ui.statusLabel, self.ui.cancelButton, self._showSegmentation)

    def _showSegmentation(self, job):
        p = self._parameterNode
        p.outputSegmentation = job.segmentation
        slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
        self._showFigures(job.figuresTable)

    def _showFigures(self, table):
        self.ui.figuresTableView.setMRMLTableNode(table)
        self.ui.figuresTableView.show()

    def onRecomputeFigures(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not compute the lung figures.", waitCursor=True):
            self.logic.lungFigures(p.inputVolume, p.outputSegmentation)
            self._showFigures(self.logic.lastFiguresTable)

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
            job = self.logic.startTraining(self._pairs, p.trainVariant, p.trainEpochs, pathOrNone(p.trainOutput), p.fineTune, p.device)
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalPlotView)
            slicer.modules.plots.logic().ShowChartInLayout(job.plot.chart)
            self._start(job, self.ui.trainProgressBar, self.ui.trainStatusLabel, self.ui.trainCancelButton, self._selectModel)

    def _selectModel(self, job):
        self._parameterNode.modelPath = str(job.output)  # selectable for "Segment lungs" right away
