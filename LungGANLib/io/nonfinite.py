"""NaN and infinite voxels: where a CT has no image, and what the pipeline does about it.

ITK's NIfTI reader hands them over as 0 (water); :func:`LungGANLib.io.nifti.check_nifti_complete`
finds them first, and :func:`with_nan` puts them back. Every format then goes through
:func:`mend_nonfinite`.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from ..config import AIR_HU
from ..errors import InputError

logger = logging.getLogger(__name__)


#: An axial slice with at least this share of NaN or infinite voxels has no image left: it is lost.
LOST_SLICE_SHARE = 0.2


def mend_nonfinite(array: np.ndarray, source: str) -> None:
    """Give NaN and infinite voxels of a canonical (z, y, x) float volume values the pipeline can use, in place.

    - Lost slices (``LOST_SLICE_SHARE`` or more of the slice) at either end of the scan become air: no
      lung is found there, and the rest of the scan is segmented as it is.
    - A lost slice with intact slices on both sides is refused: as air, it would cut the chest in two and
      open the lungs to the air outside the body; as anything else, it would be invented.
    - Scattered voxels take the value of the nearest intact voxel in their slice, so the volumes stay right.

    Raises:
        InputError: lost slices inside the scan.
    """
    from scipy import ndimage

    bad = ~np.isfinite(array)
    count = int(np.count_nonzero(bad))
    if not count:
        return
    share = bad.mean(axis=(1, 2))
    lost = share >= LOST_SLICE_SHARE
    intact = np.flatnonzero(~lost)
    if intact.size == 0:
        raise InputError(f"{source} holds no image: every slice is NaN or infinite. Export the CT again")
    inside = np.flatnonzero(lost[intact[0] : intact[-1] + 1]) + intact[0]
    if inside.size:
        shown = ", ".join(str(k) for k in inside[:8]) + (" ..." if inside.size > 8 else "")
        raise InputError(
            f"{source} has {inside.size} slice(s) inside the scan that are NaN or infinite (axial slice {shown} of "
            f"{array.shape[0]}, counted from the feet): no lung can be found across them. Export the CT again, or "
            "crop the broken slices away"
        )
    array[lost] = AIR_HU
    scattered = 0
    for z in np.flatnonzero(~lost & (share > 0)):
        holes = bad[z]
        nearest = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        array[z][holes] = array[z][nearest[0][holes], nearest[1][holes]]
        scattered += int(holes.sum())
    done = []
    if lost.any():
        done.append(f"{int(lost.sum())} slice(s) at the scan's ends with no image set to air ({AIR_HU:.0f} HU)")
    if scattered:
        done.append(f"{scattered} scattered voxel(s) given the value of their nearest intact neighbour")
    logger.warning("%s has %d voxels that are NaN or infinite (%.2f%%): %s", source, count, 100 * count / array.size,
                   "; ".join(done))


def with_nan(image: sitk.Image, voxels: np.ndarray) -> sitk.Image:
    """The image with NaN again at ``voxels`` (flat indices in file order), where ITK's NIfTI reader put 0."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    flat = array.reshape(-1)
    flat[voxels[voxels < flat.size]] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out
