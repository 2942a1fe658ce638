"""Build the brain-tissue data of advonnx's built-in suite from the MNI ICBM152 2009a template.

Source: the MNI ICBM152 2009a non-linear *symmetric* template as it ships inside nilearn's wheel
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: 1 mm
isotropic, 197 x 233 x 189 voxels, uint8, T1 already skull-stripped). Nothing is downloaded.
Copyright notice: ``advonnx/suites/data/MNI_ICBM152_LICENSE.txt`` (must travel with every copy).

Labels (per 1 mm voxel; array axes are (z, y, x), z = axial slice index, inferior -> superior):

* head mask ``M``: T1 > 0 (the template is skull-stripped, so this is in effect a brain mask),
  then 3-D binary closing (ball radius 2), hole filling slice by slice, and the largest
  3-D connected component.
* ``g = GM / 255``, ``w = WM / 255`` (probabilities in [0, 1]).
* label 0 ``background``: outside ``M``;
  label 2 ``gray_matter``: inside ``M``, ``max(g, w) >= 0.5`` and ``g >= w``;
  label 3 ``white_matter``: inside ``M``, ``max(g, w) >= 0.5`` and ``w > g``;
  label 1 ``csf_other``: inside ``M`` and ``max(g, w) < 0.5`` (ventricles and sulcal CSF, but
  also any other tissue neither GM nor WM, and partial-volume voxels where neither reaches 0.5).

Intensity: T1 windowed to its 0.5-99.5 percentiles over ``M`` and scaled to [0, 1] (clipped).

Split by axial position: test slices are the band z in [TEST_LO, TEST_HI) (20 slices around the
lateral ventricles, MNI z = +8..+27 mm); training uses only slices at least ``GAP + 1`` slices
away (z <= TEST_LO - GAP - 1 or z >= TEST_HI + GAP), i.e. 8 unused slices on each side. All
slices come from ONE template brain (itself an average of 152 subjects), so train and test are
correlated: test accuracy here measures fit to this anatomy, not generalization to new patients.

Outputs:
* ``advonnx/suites/data/brain_patches_test.npz`` (task "brain-tissue-patch"): ``x`` float32
  (N, 1, 32, 32) in [0, 1], ``y`` int64 in {0, 1, 2} = csf_other, gray_matter, white_matter (the
  label of voxel (16, 16) of the patch, i.e. the patch is slice[yc-16:yc+16, xc-16:xc+16]),
  ``class_names``, ``sample_id`` ("mni152sym09a_z080_y120_x088"). PER_CLASS_TEST per class.
* ``advonnx/suites/data/brain_slices_test.npz`` (task "brain-tissue-seg"): ``x`` float32
  (N, 1, 64, 64) in [0, 1], ``y`` int64 (N, 64, 64) in {0..3} = background, csf_other,
  gray_matter, white_matter, ``class_names``, ``sample_id`` ("mni152sym09a_z080"), ``spacing``
  float64 (3.0, 3.0) in mm (row, column). Each axial slice is cropped to a 192 x 192 window
  (rows y 21..212, columns x 2..193, which holds the whole brain) and reduced 3 x 3 -> 1: T1 by
  block mean, labels by block majority vote (ties -> lower label).
* ``models/_work/brain_patches_train.npz`` and ``models/_work/brain_slices_train.npz``: the
  same for training slices (not committed; rebuilt by this script).

Deterministic (numpy Generator seeded with SEED). Runs in a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SEED = 0
TEST_LO, TEST_HI = 80, 100  # axial test band, z index (1 mm)
GAP = 8  # slices left out between the test band and any training slice
PATCH = 32
PER_CLASS_TEST = 100
PER_CLASS_TRAIN = 6000
SEG_CROP_Y = (21, 213)
SEG_CROP_X = (2, 194)
SEG_FACTOR = 3
SEG_MIN_BRAIN = 0.02  # keep slices whose 64x64 label map is at least 2 % brain

PATCH_CLASSES = np.array(["csf_other", "gray_matter", "white_matter"])
SEG_CLASSES = np.array(["background", "csf_other", "gray_matter", "white_matter"])

ROOT = Path(__file__).resolve().parents[1]
SUITE_DATA = ROOT / "advonnx" / "suites" / "data"
WORK = ROOT / "models" / "_work"


def nilearn_data_dir() -> Path:
    import nilearn  # only for its bundled files; never downloads

    return Path(nilearn.__file__).parent / "datasets" / "data"


def read(kind: str) -> np.ndarray:
    path = nilearn_data_dir() / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    img = sitk.ReadImage(str(path))
    assert img.GetSpacing() == (1.0, 1.0, 1.0), img.GetSpacing()
    return sitk.GetArrayFromImage(img).astype(np.float32)  # (z, y, x)


def head_mask(t1: np.ndarray) -> np.ndarray:
    m = sitk.GetImageFromArray((t1 > 0).astype(np.uint8))
    m = sitk.BinaryMorphologicalClosing(m, [2, 2, 2], sitk.sitkBall)
    arr = sitk.GetArrayFromImage(m)
    for z in range(arr.shape[0]):  # fill holes slice by slice
        s = sitk.BinaryFillhole(sitk.GetImageFromArray(arr[z]))
        arr[z] = sitk.GetArrayFromImage(s)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(arr)))
    return sitk.GetArrayFromImage(cc) == 1


def build_volume():
    t1, gm, wm = read("t1"), read("gm"), read("wm")
    mask = head_mask(t1)
    g, w = gm / 255.0, wm / 255.0
    lab = np.zeros(t1.shape, np.int64)
    lab[mask] = 1
    conf = mask & (np.maximum(g, w) >= 0.5)
    lab[conf & (g >= w)] = 2
    lab[conf & (w > g)] = 3
    lo, hi = np.percentile(t1[mask], [0.5, 99.5])
    img = np.clip((t1 - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return img, lab, mask, (float(lo), float(hi))


def is_train_slice(z: int) -> bool:
    return z <= TEST_LO - GAP - 1 or z >= TEST_HI + GAP


def sample_patches(img, lab, zs, per_class, rng):
    """Balanced patches (per_class per tissue class) with centres on slices zs."""
    h = PATCH // 2
    pad_img = np.pad(img, ((0, 0), (h, h), (h, h)))
    zs = np.asarray(sorted(zs))
    sub = lab[zs]
    xs, ys, ids = [], [], []
    for cls in (1, 2, 3):
        cand = np.argwhere(sub == cls)  # (k, 3): index into zs, y, x
        pick = cand[rng.choice(len(cand), size=per_class, replace=False)]
        for iz, yc, xc in pick:
            z = int(zs[iz])
            xs.append(pad_img[z, yc : yc + PATCH, xc : xc + PATCH])  # centre voxel at (h, h)
            ys.append(cls - 1)
            ids.append(f"mni152sym09a_z{z:03d}_y{yc:03d}_x{xc:03d}")
    order = rng.permutation(len(ys))
    x = np.stack(xs)[order][:, None].astype(np.float32)
    y = np.asarray(ys, np.int64)[order]
    sid = np.asarray(ids)[order]
    return x, y, sid


def seg_slice(img2d, lab2d):
    f = SEG_FACTOR
    im = img2d[SEG_CROP_Y[0] : SEG_CROP_Y[1], SEG_CROP_X[0] : SEG_CROP_X[1]]
    lb = lab2d[SEG_CROP_Y[0] : SEG_CROP_Y[1], SEG_CROP_X[0] : SEG_CROP_X[1]]
    n = im.shape[0] // f
    im = im.reshape(n, f, n, f).mean(axis=(1, 3))
    onehot = np.eye(4, dtype=np.int64)[lb].reshape(n, f, n, f, 4).sum(axis=(1, 3))
    return im.astype(np.float32), onehot.argmax(-1).astype(np.int64)


def build_slices(img, lab, zs):
    xs, ys, ids = [], [], []
    for z in sorted(zs):
        im, lb = seg_slice(img[z], lab[z])
        if (lb > 0).mean() < SEG_MIN_BRAIN:
            continue
        xs.append(im[None])
        ys.append(lb)
        ids.append(f"mni152sym09a_z{z:03d}")
    return np.stack(xs), np.stack(ys), np.asarray(ids)


def main() -> int:
    rng = np.random.default_rng(SEED)
    img, lab, mask, (lo, hi) = build_volume()
    # the whole brain must sit inside the segmentation crop window
    yy, xx = np.nonzero(mask.any(axis=0))
    assert SEG_CROP_Y[0] <= yy.min() and yy.max() < SEG_CROP_Y[1], (yy.min(), yy.max())
    assert SEG_CROP_X[0] <= xx.min() and xx.max() < SEG_CROP_X[1], (xx.min(), xx.max())

    brain_z = [z for z in range(lab.shape[0]) if (lab[z] > 0).any()]
    test_z = [z for z in brain_z if TEST_LO <= z < TEST_HI]
    train_z = [z for z in brain_z if is_train_slice(z)]
    assert min(abs(a - b) for a in train_z for b in test_z) > GAP

    xte, yte, ste = sample_patches(img, lab, test_z, PER_CLASS_TEST, rng)
    xtr, ytr, str_ = sample_patches(img, lab, train_z, PER_CLASS_TRAIN, rng)
    sxte, syte, sste = build_slices(img, lab, test_z)
    sxtr, sytr, sstr = build_slices(img, lab, train_z)

    SUITE_DATA.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(SUITE_DATA / "brain_patches_test.npz", x=xte, y=yte, class_names=PATCH_CLASSES, sample_id=ste)
    np.savez_compressed(
        SUITE_DATA / "brain_slices_test.npz",
        x=sxte,
        y=syte,
        class_names=SEG_CLASSES,
        sample_id=sste,
        spacing=np.array([3.0, 3.0]),
    )
    np.savez(WORK / "brain_patches_train.npz", x=xtr, y=ytr, class_names=PATCH_CLASSES, sample_id=str_)
    np.savez(
        WORK / "brain_slices_train.npz",
        x=sxtr,
        y=sytr,
        class_names=SEG_CLASSES,
        sample_id=sstr,
        spacing=np.array([3.0, 3.0]),
    )
    summary = {
        "t1_window": [lo, hi],
        "voxel_label_counts": np.bincount(lab.ravel(), minlength=4).tolist(),
        "test_slices": [min(test_z), max(test_z)],
        "train_slices": len(train_z),
        "patch_test": {"n": len(yte), "per_class": np.bincount(yte, minlength=3).tolist()},
        "patch_train": {"n": len(ytr), "per_class": np.bincount(ytr, minlength=3).tolist()},
        "seg_test": {
            "n": len(syte),
            "pixel_fraction": (np.bincount(syte.ravel(), minlength=4) / syte.size).round(4).tolist(),
        },
        "seg_train": {
            "n": len(sytr),
            "pixel_fraction": (np.bincount(sytr.ravel(), minlength=4) / sytr.size).round(4).tolist(),
        },
    }
    (WORK / "data_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
