"""LungGAN: automatic lung segmentation of chest CT in 3D Slicer.

Thin on purpose, as Slicer's scripted-module template: module, parameter node, widget, logic and self-test. The
panel's behaviour is ``LungGANLib.slicer.widget``, the logic ``LungGANLib.slicer.mrml``; segmentation and training
run in a background process (``LungGANLib.slicer.jobs``) polled by a timer: Slicer never freezes, Cancel changes nothing.
"""

import os
import sys
import unittest

# Development mode ("Additional module paths" = this repository's LungGAN/ folder): the core is one level up.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "LungGANLib")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from typing import Annotated  # noqa: E402

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

from LungGANLib.slicer import mrml  # noqa: E402
from LungGANLib.config import VARIANT_NAMES  # noqa: E402


class LungGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungGAN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LungGAN developers"]
        self.parent.helpText = (
            "Segments the right and left lung of a chest CT with LGAN (a U-Net generator trained against a Wasserstein "
            "critic), and fine-tunes it on your own scans. See the <a href='https://github.com/lunggan/SlicerLungGAN'>README</a>."
        )
        self.parent.acknowledgementText = "Method: Tan et al., LGAN: Lung Segmentation in CT Scans Using GAN (2020)."


@parameterNodeWrapper
class LungGANParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""  # empty: the shipped model
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    splitLungs: bool = True
    fillHoles: bool = True
    masses: bool = False  # also join the masses the lesion model finds (--masses)
    createLabelmap: bool = False
    trainVariant: Annotated[str, Choice(list(VARIANT_NAMES))] = "regression"
    trainEpochs: Annotated[int, WithinRange(1, 500)] = 5
    fineTune: bool = True
    trainOutput: str = ""  # empty: ~/LungGAN/models/<variant>-<n>.safetensors


class LungGANLogic(ScriptedLoadableModuleLogic, mrml.LungGANLogic):
    """The module's logic: the parameter node from Slicer, everything else from ``LungGANLib.slicer.mrml.LungGANLogic``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        mrml.LungGANLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return LungGANParameterNode(super().getParameterNode())


class LungGANWidget(ScriptedLoadableModuleWidget):
    """The panel; what its buttons do is ``LungGANLib.slicer.widget.LungGANPanel``."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from LungGANLib.slicer.widget import LungGANPanel

        uiPath = self.resourcePath("UI/LungGAN.ui")
        if not os.path.isfile(uiPath):  # development mode: Resources/ is beside LungGAN/
            uiPath = os.path.join(_ROOT, "Resources", "UI", "LungGAN.ui")
        self.logic = LungGANLogic()  # what slicer.util.getModuleLogic("LungGAN") returns
        self.panel = LungGANPanel(self, self.logic, uiPath)

    def cleanup(self):
        self.panel.cleanup()

    def enter(self):
        self.panel.initializeParameterNode()

    def exit(self):
        self.panel.exit()


class LungGANTest(ScriptedLoadableModuleTest):
    """What "Reload and Test" runs: segment a real chest CT (``ct/lidc-idri-0001.nii.gz`` under $LUNGGAN_DATA,
    else SampleData's "CTChest") and check the segments. Without PyTorch and the other packages, or without a
    CT, the test is skipped, never passed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        try:
            self.test_segment_and_keep_existing()
        except unittest.SkipTest as skipped:  # ctest reports it as skipped; Reload and Test would show an error
            if slicer.app.testingEnabled():
                raise
            slicer.util.infoDisplay(f"LungGAN's self-test did not run: {skipped}")

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
