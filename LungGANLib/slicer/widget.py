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

from ..dependencies import TORCH_REQUIREMENT, torch_too_old
from .background import RUNNING
from .fields import FIGURES_TABLE_REFERENCE, PATH_FIELDS, REVIEW_TABLE_REFERENCE, path_or_none, sync_path
from .mrml_review import as_sentence, flagged_slices, jump_to_slice
from .mrml_nodes import Cancelled, source_volume

pathOrNone = path_or_none  # the name this module used before


def ensureDependencies() -> bool:
    """PyTorch through the SlicerPyTorch extension, the rest with pip; False (with a message) if not possible."""
    from ..dependencies import missing_packages, torch_available

    if not torch_available():
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("LungGAN needs PyTorch: install the 'PyTorch' extension (Extensions Manager), restart Slicer, and try again.")
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        try:
            try:
                installed = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
            except TypeError:  # a SlicerPyTorch older than its version requirement: the check below still runs
                installed = torchLogic.installTorch(askConfirmation=True)
        except Exception as exc:  # a failed download or pip run
            slicer.util.errorDisplay(f"Installing PyTorch failed: {exc}", detailedText=traceback.format_exc())
            return False
        if installed is None:
            slicer.util.errorDisplay("PyTorch was not installed; LungGAN cannot run without it.")
            return False
    tooOld = torch_too_old()
    if tooOld:
        slicer.util.errorDisplay(tooOld)
        return False
    missing = missing_packages()
    if missing:
        if not slicer.util.confirmOkCancelDisplay(f"LungGAN needs these Python packages: {', '.join(missing)}. Install them now?"):
            return False
        try:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        except Exception as exc:  # pip's failures come in many types
            qt.QApplication.restoreOverrideCursor()  # in case the failure left a wait cursor
            # Slicer 5.12's pip_install shows its own error dialog; a second one would only repeat it.
            if (slicer.app.majorVersion, slicer.app.minorVersion) < (5, 12):
                slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}", detailedText=traceback.format_exc())
            else:
                slicer.util.showStatusMessage(f"Installing {', '.join(missing)} failed: see the Python console.", 10000)
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
        for hidden in (self.ui.progressBar, self.ui.trainProgressBar, self.ui.figuresTableView, self.ui.reviewTableView):
            hidden.hide()
        self._reviewRow = -1  # the review table's row shown last
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.recomputeFiguresButton.connect("clicked(bool)", self.onRecomputeFigures)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.reviewTableView.connect("clicked(QModelIndex)", lambda index: self._showReviewRow(index.row()))
        self.ui.nextFlaggedButton.connect("clicked(bool)", lambda: self._showReviewRow(self._reviewRow + 1))
        self.ui.previousFlaggedButton.connect("clicked(bool)", lambda: self._showReviewRow(self._reviewRow - 1))
        self.ui.trainCancelButton.connect("clicked(bool)", self.onCancel)
        for widgetName, field in PATH_FIELDS.items():
            # currentPathChanged never fires for an empty field or a path without the suffix (CTK's validator):
            # follow the text itself.
            for lineEdit in slicer.util.findChildren(getattr(self.ui, widgetName), className="QLineEdit"):
                lineEdit.connect("textChanged(QString)", lambda text, f=field: sync_path(self._parameterNode, f, text))
        self.initializeParameterNode()

    # -- the parameter node and the scene ------------------------------------------------------

    def cleanup(self):
        self.onCancel()  # the process tree ends, and its files go, in the background
        self._timer.stop()
        self.removeObservers()

    def exit(self):
        """Leaving the module: the panel lets go of the parameter node; a running job goes on and is finished
        (its result put into the scene) when the module is entered again or by the timer meanwhile."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self._pairs.clear()  # their nodes are about to be removed
        self.ui.pairsListWidget.clear()
        self._hideFigures()  # the view would keep the table node, and show the last patient's figures
        self._showReview(None)
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

    def _fieldPath(self, widgetName):
        """The path a field shows now, synced into the parameter node (None: the default)."""
        return sync_path(self._parameterNode, PATH_FIELDS[widgetName], getattr(self.ui, widgetName).currentPath)

    def _updateButtons(self, caller=None, event=None):
        running = self._job is not None
        p = self._parameterNode
        for widgetName, field in PATH_FIELDS.items():
            widget = getattr(self.ui, widgetName)
            value = getattr(p, field) if p else ""
            if widget.currentPath != value:
                widget.currentPath = value
        self.ui.segmentButton.enabled = not running and bool(p and p.inputVolume)
        self.ui.recomputeFiguresButton.enabled = not running and bool(p and p.outputSegmentation)
        shown = self.ui.figuresTableView.mrmlTableNode()
        if shown is not None and (not p or not p.outputSegmentation or shown is not self._figuresTableOf(p.outputSegmentation)):
            self._hideFigures()  # the figures of another segmentation (or of a scene that is gone)
        review = p.outputSegmentation.GetNodeReference(REVIEW_TABLE_REFERENCE) if p and p.outputSegmentation else None
        if review is not self.ui.reviewTableView.mrmlTableNode():
            self._showReview(review)  # the review kept with the chosen segmentation, or none
        rows = len(flagged_slices(review)) if review is not None else 0
        self.ui.nextFlaggedButton.enabled = rows > 0 and self._reviewRow < rows - 1
        self.ui.previousFlaggedButton.enabled = rows > 0 and self._reviewRow > 0
        self.ui.trainButton.enabled = not running and bool(self._pairs)
        for button in (self.ui.cancelButton, self.ui.trainCancelButton):
            button.enabled = running and button is self._shows[2]

    # -- one job at a time, whatever it does --------------------------------------------------

    def _start(self, job, bar, label, cancelButton, after=None):
        """Run ``job`` (see :mod:`LungGANLib.slicer.jobs`), showing it in ``bar`` and ``label``; ``after(job)`` once done."""
        if self._job is not None:  # a new job ends the old one's process tree (in the background)
            self._job.cancel(wait=False)
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
            self._stop(as_sentence(str(exc)))
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
        """Ask the job to stop and return at once: the timer keeps polling until its process tree has ended
        (up to the grace period), and then says it was cancelled. The GUI never waits for it."""
        if self._job is not None:
            self._job.cancel(wait=False)
            self._shows[1].text = "Cancelling..."

    # -- segment lungs ------------------------------------------------------------------------

    def onSegment(self):
        if not ensureDependencies():
            return
        p = self._parameterNode
        mode = askSegmentationMode(p.outputSegmentation)
        if mode is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not start segmentation.", waitCursor=True):
            job = self.logic.startSegmentation(p.inputVolume, self._fieldPath("modelPathLineEdit"), p.device, p.splitLungs,
                                               p.fillHoles, p.outputSegmentation, mode, p.createLabelmap, masses=p.masses)
            self._start(job, self.ui.progressBar, self.ui.statusLabel, self.ui.cancelButton, self._showSegmentation)

    def _showSegmentation(self, job):
        p = self._parameterNode
        p.outputSegmentation = job.segmentation
        slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
        self._showFigures(job.figuresTable)
        self._showReview(job.reviewTable)
        self._updateButtons()

    def _showFigures(self, table):
        self.ui.figuresTableView.setMRMLTableNode(table)
        self.ui.figuresTableView.show()

    def _showReview(self, table):
        """Show a segmentation's review table (None: hide it); no row is chosen yet."""
        self._reviewRow = -1
        self.ui.reviewTableView.setMRMLTableNode(table)
        self.ui.reviewTableView.setVisible(table is not None)

    def _showReviewRow(self, row):
        """Select a row of the review table and move the slice views to its slice (of the segmentation's CT)."""
        p = self._parameterNode
        table = self.ui.reviewTableView.mrmlTableNode()
        slices = flagged_slices(table)
        if not p or not p.outputSegmentation or not 0 <= row < len(slices):
            return
        volume = source_volume(p.outputSegmentation, p.inputVolume)
        if volume is None:
            return
        self._reviewRow = row
        self.ui.reviewTableView.selectRow(row)
        jump_to_slice(slicer.mrmlScene, volume, slices[row])
        self._updateButtons()

    def _hideFigures(self):
        self.ui.figuresTableView.setMRMLTableNode(None)
        self.ui.figuresTableView.hide()

    @staticmethod
    def _figuresTableOf(segmentation):
        return segmentation.GetNodeReference(FIGURES_TABLE_REFERENCE)

    def onRecomputeFigures(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not compute the lung figures.", waitCursor=True):
            # Measured on the CT the segmentation was made on (its source volume), not on whichever is selected.
            self.logic.lungFigures(p.inputVolume, p.outputSegmentation)
            self._showFigures(self.logic.lastFiguresTable)
            self.ui.statusLabel.text = f"Lung figures of {p.outputSegmentation.GetName()} on {self.logic.lastFiguresVolume.GetName()}."

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
            job = self.logic.startTraining(self._pairs, p.trainVariant, p.trainEpochs, self._fieldPath("trainOutputPathLineEdit"),
                                           p.fineTune, p.device)
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalPlotView)
            slicer.modules.plots.logic().ShowChartInLayout(job.plot.chart)
            self._start(job, self.ui.trainProgressBar, self.ui.trainStatusLabel, self.ui.trainCancelButton, self._selectModel)

    def _selectModel(self, job):
        self._parameterNode.modelPath = str(job.output)  # selectable for "Segment lungs" right away
