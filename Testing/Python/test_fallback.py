"""segment.fallback: where the generator loses lung the classical method finds, the classical mask is written with a
warning; where it does not, nothing changes; where the field of view cuts the lungs or comes near them, the classical
method's lung joins the mask on those slices. On cip-ct-64, a coarse emphysematous scan (64 pixels of 4.2 mm)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from field_of_view_cuts import box_inside_the_lungs

from LungGANLib.evaluate.metrics import dice
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment import fallback, inference
from LungGANLib.segment.classical import body_mask
from LungGANLib.segment.inference import SegmentOptions, segment
from LungGANLib.segment.preprocess import wall_beside_a_cut_lung


@pytest.fixture(scope="module")
def cip(data):
    folder = data / "fixtures" / "cip-ct-64"
    ct = load_ct(folder / "ct-64.nrrd")
    return ct, mask_from_image(sitk.ReadImage(str(folder / "wholeLung-64.nrrd")), ct) > 0


def test_the_default_holds_about_as_much_lung_as_there_is_aerated_tissue_in_the_body(cip, caplog):
    ct, _ = cip
    with caplog.at_level(logging.WARNING):
        labels = segment(ct, SegmentOptions(device="cpu"))
    assert "field of view" not in caplog.text  # it holds the chest wall
    aerated = fallback.aerated_inside_ml(ct.array, body_mask(ct.array), ct.voxel_volume_ml)
    found = float((labels > 0).sum()) * ct.voxel_volume_ml
    assert 0.95 * aerated <= found <= 1.1 * aerated  # far above LOST_SHARE: the fallback stays out of the way


def test_where_the_field_of_view_cuts_the_lungs_the_classical_methods_lung_joins_the_mask(
    cip, caplog, own_copy_of_the_default
):
    """cip-ct-64 cut 5 mm inside its lungs on every side (benchmarks/shifts.py's "field of view through the lungs")."""
    ct, ref = cip
    box = (slice(None), *box_inside_the_lungs(ref, ct.spacing[0]))
    cut, shown = replace(ct, array=np.ascontiguousarray(ct.array[box])), ref[box]
    findings: dict = {}
    with caplog.at_level(logging.WARNING):
        labels = segment(cut, SegmentOptions(device="cpu", review=True), findings=findings)
    _, _, cut_slices, near_slices = wall_beside_a_cut_lung(cut.array, body_mask(cut.array), cut.spacing)
    assert 0 < cut_slices.size < np.count_nonzero(labels.any(axis=(1, 2)))  # the widest slices, not the apices
    assert set(cut_slices) <= set(near_slices)
    said = fallback.view_cut_text(np.count_nonzero(labels[cut_slices].any(axis=(1, 2))), cut.array.shape[0])
    assert said in caplog.text and findings["review"].as_dict()["scan_flags"] == [said]
    classical = segment(cut, SegmentOptions(method="classical", device="cpu"))
    mine = segment(cut, SegmentOptions(device="cpu", model=str(own_copy_of_the_default)))  # no union
    joined = np.flatnonzero((labels != mine).any(axis=(1, 2)))
    assert joined.size and set(joined) <= set(near_slices)  # only the slices the field of view cuts or comes near
    assert ((labels[joined] > 0) >= (classical[joined] > 0)).all()  # every classical lung voxel
    assert ((labels > 0) >= (mine > 0)).all()  # and nothing of the generator's taken away
    assert dice(labels > 0, shown) > dice(mine > 0, shown) + 0.005
    assert dice(labels > 0, shown) >= dice(classical > 0, shown) - 0.002


def test_a_generator_that_loses_the_lung_is_replaced_by_the_classical_method_with_a_warning(cip, caplog, monkeypatch,
                                                                                            own_copy_of_the_default):
    ct, ref = cip
    classical = segment(ct, SegmentOptions(method="classical", device="cpu"))
    own = segment(ct, SegmentOptions(device="cpu"))
    assert not np.array_equal(own, classical)  # the generator's mask is its own
    # A generator that loses the left lung (the patient's left: the larger x).
    real = inference.predict_probabilities

    def half(hu, *args, **kwargs):
        out = real(hu, *args, **kwargs)
        out[:, :, hu.shape[2] // 2 :] = False
        return out

    monkeypatch.setattr(inference, "predict_probabilities", half)
    with caplog.at_level(logging.WARNING):
        labels = segment(ct, SegmentOptions(device="cpu"))
    assert np.array_equal(labels, classical)
    assert "the classical method's mask is written instead" in caplog.text
    assert dice(labels > 0, ref) > 0.97
    # A model of your own (the shipped weights, copied elsewhere) keeps its mask: an evaluation of it needs it.
    mine = own_copy_of_the_default
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        labels = segment(ct, SegmentOptions(device="cpu", model=str(mine)))
    assert not np.array_equal(labels, classical) and "classical method's mask" not in caplog.text
    # The apices' three top slices lost are not lung lost: the generator's mask stays, without a word.
    caplog.clear()

    def a_little(hu, *args, **kwargs):
        out = real(hu, *args, **kwargs)
        out[np.flatnonzero(out.any(axis=(1, 2)))[-3:]] = False
        return out

    monkeypatch.setattr(inference, "predict_probabilities", a_little)
    with caplog.at_level(logging.WARNING):
        labels = segment(ct, SegmentOptions(device="cpu"))
    assert not np.array_equal(labels, classical) and "classical method's mask" not in caplog.text


def test_the_classical_mask_replaces_the_generators_on_an_emphysematous_scan_darker_than_any_it_saw(cip, caplog):
    """cip-ct-64's lung moved 60 % of the way to air (benchmarks/shifts.py's emphysema): the generator finds none."""
    ct, ref = cip
    hu = ct.array.astype(np.float32)
    lung = ref & (hu < -500)
    hu[lung] = -1000 + (hu[lung] + 1000) * 0.4
    darker = replace(ct, array=hu)
    labels = segment(darker, SegmentOptions(device="cpu"))
    assert dice(labels > 0, ref) > 0.97
    assert np.array_equal(labels, segment(darker, SegmentOptions(method="classical", device="cpu")))


def test_where_the_generator_loses_some_of_a_darker_lung_the_classical_methods_lung_joins_it(cip, caplog, monkeypatch):
    """cip-ct-64 20 HU darker: the generator keeps most of the lung (over LOST_SHARE) and loses the rest."""
    ct, ref = cip
    darker = replace(ct, array=ct.array.astype(np.float32) - 20.0)
    monkeypatch.setattr(fallback, "FOUND_SHARE", 0.0)  # the rule off: the generator's mask as it comes
    alone = segment(darker, SegmentOptions(device="cpu"))
    monkeypatch.undo()
    aerated = fallback.aerated_inside_ml(darker.array, body_mask(darker.array), ct.voxel_volume_ml)
    classical = segment(darker, SegmentOptions(method="classical", device="cpu"))
    found, by_threshold = ((m > 0).sum() * ct.voxel_volume_ml for m in (alone, classical))
    assert fallback.LOST_SHARE * aerated < found < fallback.FOUND_SHARE * aerated  # not lost, not whole
    assert found < fallback.JOIN_SHARE * by_threshold
    findings: dict = {}
    with caplog.at_level(logging.WARNING):
        labels = segment(darker, SegmentOptions(device="cpu", review=True), findings=findings)
    assert np.array_equal(labels, np.where(alone > 0, alone, classical))  # the classical lung where it had none
    joined_ml = ((labels > 0) & (alone == 0)).sum() * ct.voxel_volume_ml
    said = [m.split(": ", 1)[1] for m in caplog.messages if "the classical method's lung joins the mask" in m]
    assert said == [f"the generator found {found:.0f} mL of lung where the classical method finds {by_threshold:.0f} "
                    f"mL; the classical method's lung joins the mask ({joined_ml:.0f} mL; check it)"]
    assert findings["review"].scan == said  # the review's whole-scan flag, word for word (Slicer shows it once)
    assert dice(alone > 0, ref) < 0.95 and dice(labels > 0, ref) > 0.97


def test_a_mask_that_holds_the_aerated_tissue_costs_no_second_method(cip, monkeypatch):
    ct, _ = cip
    ran = []
    monkeypatch.setattr(fallback, "segment_classical", lambda *a, **k: ran.append(1))
    segment(ct, SegmentOptions(device="cpu"))
    assert not ran
