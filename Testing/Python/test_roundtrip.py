"""Property test: whatever a CT's geometry, its mask comes back on exactly its voxels.

Random sizes, spacings, origins, axis orders and flips (all 48), oblique tilts up to
30 degrees, voxel types and file formats: the CT is written, read by LungGAN into its
canonical orientation, a mask is computed voxel by voxel there (HU above a threshold),
written back, and must equal the same threshold applied to the file as SimpleITK reads
it, on the same geometry.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is part of the test requirements")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from LungGANLib.io import load_ct, mask_to_image  # noqa: E402
from LungGANLib.io.output import write_image  # noqa: E402

SIGNED_PERMUTATIONS = [
    np.diag(signs) @ np.eye(3)[list(order)]
    for order in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]
DTYPES = {"int16": np.int16, "uint8": np.uint8, "int32": np.int32, "float32": np.float32}
EXACT = {".nrrd", ".mha"}  # these store the geometry as doubles (to the last bit); NIfTI rounds it to float32


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(*[st.integers(2, 9)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-400.0, 400.0)] * 3),
    permutation=st.integers(0, len(SIGNED_PERMUTATIONS) - 1),
    tilt=st.floats(0.0, 30.0),
    tilt_axis=st.tuples(*[st.floats(-1.0, 1.0)] * 3).filter(lambda v: np.linalg.norm(v) > 0.1),
    dtype=st.sampled_from(sorted(DTYPES)),
    suffix=st.sampled_from([".nrrd", ".mha", ".nii.gz"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_mask_lands_on_the_voxels_of_its_ct(tmp_path_factory, size, spacing, origin, permutation, tilt, tilt_axis,
                                              dtype, suffix, seed):
    folder = tmp_path_factory.mktemp("rt")
    rng = np.random.default_rng(seed)
    low, high = (0, 255) if dtype == "uint8" else (-1024, 1500)
    array = rng.integers(low, high, size=size[::-1]).astype(DTYPES[dtype])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    direction = rotation(np.array(tilt_axis), tilt) @ SIGNED_PERMUTATIONS[permutation]
    image.SetDirection(direction.ravel().tolist())
    ct_path = folder / f"ct{suffix}"
    sitk.WriteImage(image, str(ct_path))

    threshold = (low + high) / 2
    volume = load_ct(ct_path, force=True)
    labels = (volume.array > threshold).astype(np.uint8)
    out = write_image(mask_to_image(labels, volume), folder / f"mask{suffix}")

    theirs = sitk.ReadImage(str(ct_path))
    mask = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(theirs) > threshold)
    assert mask.GetSize() == theirs.GetSize()
    tolerance = 1e-9 if suffix in EXACT else 1e-4  # NRRD stores spacing times direction: last-bit noise
    np.testing.assert_allclose(mask.GetSpacing(), theirs.GetSpacing(), rtol=tolerance, atol=0)
    np.testing.assert_allclose(mask.GetOrigin(), theirs.GetOrigin(), atol=tolerance * 1000)
    np.testing.assert_allclose(mask.GetDirection(), theirs.GetDirection(), atol=tolerance)
