"""Corruption throughput: every advonnx corruption vs TorchIO's equivalent transform.

Same images for both: a batch of 224×224 single-channel 2-D phantoms (images/s) and a batch of
128³ volumes (volumes/s), values in [0, 1], 1 mm spacing. advonnx corrupts the whole batch in
one call (severity 3, NumPy on CPU; CuPy too when CuPy sees a GPU);
TorchIO's transforms act on one subject at a time (its design), so they loop over the batch
with each image as a (C, W, H, D) tensor (2-D images as D = 1). TorchIO's parameters are fixed
to the advonnx severity-3 parameter where the transform is the same model; corruptions without
a TorchIO counterpart (Rician/Poisson/speckle noise, motion blur, brightness, contrast, JPEG,
pixelation) get ``null``. Timing: minimum over ``--repeats`` runs after one warm-up; the host
load average (shared 2-core machine) is recorded with the numbers.

Writes benchmarks/results/corruptions.json and prints a Markdown table.

    python benchmarks/bench_corruptions.py [--batch 16] [--volumes 2] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
from _benchlib import markdown_table, write_results

from advonnx.corruptions import CORRUPTIONS, apply_corruption
from advonnx.xp import Random

SEVERITY = 3


def phantom(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random ellipses (2-D) or ellipsoids (3-D) on a dark background, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    img = np.zeros(shape, np.float32)
    for k in range(8):
        centre = rng.uniform(-0.4, 0.4, len(shape)) if k else np.zeros(len(shape))
        radii = rng.uniform(0.15, 0.5, len(shape)) if k else np.full(len(shape), 0.85)
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1
        img[inside] += 0.6 if k == 0 else rng.uniform(-0.2, 0.3)
    return np.clip(img, 0, 1)


def torchio_transforms(severity: int, dims: int, size: int):
    """TorchIO transforms with the advonnx parameters of ``severity`` for ``dims``-D images (absent: no
    counterpart). TorchIO's spatial axes are (H, W, 1) for our 2-D images and (D, H, W) for volumes;
    pixel parameters scale with the image side ``size`` as advonnx scales them (``fov_scale``)."""
    import torchio as tio

    p = {name: c.severity_params[severity - 1] for name, c in CORRUPTIONS.items()}
    ghosts, ghost_int = p["ghosting"]
    spikes, spike_int = p["spike"]
    degrees, shift, moves = p["kspace_motion"]
    g = math.log(p["gamma"])
    ratio = size / 224
    fov = ratio if ratio >= 1 else math.sqrt(ratio)  # advonnx.corruptions._ops.fov_scale
    blur = p["gaussian_blur"] * fov
    h_axis = 0 if dims == 2 else 1  # advonnx ghosts along H
    in_plane = (0, 1) if dims == 2 else (0, 1, 2)
    return {
        "gaussian_noise": tio.RandomNoise(mean=0.0, std=(p["gaussian_noise"], p["gaussian_noise"])),
        "gaussian_blur": tio.RandomBlur(std=(blur, blur)),
        "bias_field": tio.RandomBiasField(coefficients=p["bias_field"], order=3),
        "ghosting": tio.RandomGhosting(num_ghosts=(ghosts, ghosts), axes=(h_axis,), intensity=(ghost_int, ghost_int)),
        "spike": tio.RandomSpike(num_spikes=(spikes, spikes), intensity=(spike_int, spike_int)),
        "kspace_motion": tio.RandomMotion(degrees=degrees, translation=shift, num_transforms=moves),
        "gamma": tio.RandomGamma(log_gamma=(g, g)),
        # TorchIO resamples one random axis; advonnx all spatial axes
        "downsample_upsample": tio.RandomAnisotropy(axes=in_plane, downsampling=(p["downsample_upsample"],) * 2),
    }


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(x: np.ndarray, layout: str, repeats: int, xp_name: str) -> list[dict]:
    import torch

    n = x.shape[0]
    xd = x
    if xp_name == "cupy":
        import cupy

        xd = cupy.asarray(x)

    def ours(name):
        def run():
            out = apply_corruption(name, xd, SEVERITY, Random(0), layout=layout)
            if xp_name == "cupy":
                import cupy

                cupy.cuda.Device().synchronize()
            return out

        return run

    # TorchIO: (C, W, H, D); a 2-D (C, H, W) image is a slab of depth 1
    subjects = [torch.from_numpy(img if img.ndim == 4 else img[..., None]) for img in x]

    def theirs(t):
        def run():
            return [t(s) for s in subjects]

        return run

    tio_transforms = torchio_transforms(SEVERITY, x.ndim - 2, max(x.shape[-2:]))
    rows = []
    for name in CORRUPTIONS:
        t_ours = best_time(ours(name), repeats)
        t = tio_transforms.get(name)
        t_tio = best_time(theirs(t), repeats) if t is not None else None
        rows.append(
            {
                "corruption": name,
                "ours_per_s": n / t_ours,
                "torchio_per_s": None if t_tio is None else n / t_tio,
                "speedup": None if t_tio is None else t_tio / t_ours,
                "torchio_transform": None if t is None else type(t).__name__,
            }
        )
        print(
            f"  {name:20s} ours {n / t_ours:9.2f}/s  torchio {'—' if t_tio is None else f'{n / t_tio:9.2f}/s'}",
            flush=True,
        )
    return rows


def device_name() -> str:
    """ "cuda" when CuPy sees a GPU (corruptions need CuPy only, not onnxruntime), else "cpu"."""
    try:
        import cupy

        return "cuda" if cupy.cuda.runtime.getDeviceCount() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - no CuPy or no driver: CPU only
        return "cpu"


def table(results: dict) -> str:
    def f(v, d=1):
        return "—" if v is None else f"{v:.{d}f}"

    return markdown_table(
        [
            "corruption",
            "224² ours img/s:",
            "224² TorchIO img/s:",
            "×:",
            "128³ ours vol/s:",
            "128³ TorchIO vol/s:",
            "×:",
        ],
        [
            [
                r2["corruption"],
                f(r2["ours_per_s"]),
                f(r2["torchio_per_s"]),
                f(r2["speedup"]),
                f(r3["ours_per_s"], 2),
                f(r3["torchio_per_s"], 2),
                f(r3["speedup"]),
            ]
            for r2, r3 in zip(results["images_224"]["rows"], results["volumes_128"]["rows"])
        ],
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="224×224 images per batch")
    ap.add_argument("--volumes", type=int, default=2, help="128³ volumes per batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 4, 1 volume, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.volumes, args.repeats = 4, 1, 1
    import torch
    import torchio

    torch.set_num_threads(2)
    load0 = os.getloadavg()
    results = {
        "severity": SEVERITY,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchio": torchio.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_start": load0,
        "devices": {},
    }
    devices = ["cpu"] + (["cuda"] if device_name() == "cuda" else [])
    for dev in devices:
        xp_name = "cupy" if dev == "cuda" else "numpy"
        imgs = np.stack([phantom((224, 224), s)[None] for s in range(args.batch)])
        vols = np.stack([phantom((128, 128, 128), 100 + s)[None] for s in range(args.volumes)])
        print(f"[{dev}] {args.batch} images 1×224×224", flush=True)
        r2 = {"batch": args.batch, "shape": [1, 224, 224], "rows": measure(imgs, "NCHW", args.repeats, xp_name)}
        print(f"[{dev}] {args.volumes} volumes 1×128³", flush=True)
        r3 = {"batch": args.volumes, "shape": [1, 128, 128, 128], "rows": measure(vols, "NCDHW", args.repeats, xp_name)}
        results["devices"][dev] = {"images_224": r2, "volumes_128": r3}
    results["load_average_end"] = os.getloadavg()
    write_results("corruptions", results, indent=1)
    for dev, res in results["devices"].items():
        print(
            f"\n### {dev} (advonnx severity {SEVERITY}; TorchIO same parameters, one subject at a time; "
            f"load average {load0[0]:.2f} → {results['load_average_end'][0]:.2f})\n"
        )
        print(table(res))


if __name__ == "__main__":
    main()
