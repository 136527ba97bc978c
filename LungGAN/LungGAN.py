"""LungGAN scripted module for 3D Slicer (placeholder).

The Slicer user interface (parameter node, widget, logic adapting MRML nodes to
LungGANLib, self-test) is the subject of a later step; until then this file only
declares the module so that the extension's layout is complete. Everything the
module will call lives in the Slicer-free package ``LungGANLib``.
"""

from slicer.ScriptedLoadableModule import ScriptedLoadableModule


class LungGAN(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungGAN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LungGAN developers"]
        self.parent.helpText = (
            "Automatic lung segmentation of chest CT (right and left lung) with LGAN. "
            "The user interface is not written yet: use the lunggan command line or LungGANLib from the Python console."
        )
        self.parent.acknowledgementText = "Method: Tan et al., LGAN: Lung Segmentation in CT Scans Using Generative Adversarial Network (2020)."
