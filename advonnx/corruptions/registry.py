"""The registry of corruptions: name -> :class:`Corruption` with its five severities.

Parameter values and their sources are tabulated in ``advonnx/corruptions/README.md``; keep
the two in step (a test compares them).
"""

from __future__ import annotations

from advonnx.corruptions import blur, intensity, jpeg, kspace, noise, resolution, signal
from advonnx.corruptions.base import Corruption, apply_corruption_with
from advonnx.errors import AdvonnxError

IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"
MEDMNIST_C = "MedMNIST-C (Di Salvo et al. 2024)"
TORCHIO = "TorchIO (Pérez-García et al. 2021)"
NSTDB = "MIT-BIH Noise Stress Test Database SNRs 24..0 dB (Moody, Muldrow & Mark 1984)"
NSTDB_SNR = (24.0, 18.0, 12.0, 6.0, 0.0)

_ALL = (
    Corruption(
        "gaussian_noise",
        "Additive white Gaussian noise, std relative to the value range.",
        f"{MEDMNIST_C} chestmnist gaussian_noise std; ImageNet-C form x + N(0, s^2).",
        (0.04, 0.08, 0.12, 0.18, 0.26),
        False,
        noise.gaussian_noise,
        ("image", "signal"),
    ),
    Corruption(
        "rician_noise",
        "MRI magnitude noise: |x + n1 + i n2| with n1, n2 Gaussian.",
        f"Rician model of MRI magnitude images (Gudbjartsson & Patz 1995); std chosen as "
        f"half of {MEDMNIST_C}'s Gaussian std, as MR noise sits below CT/X-ray levels.",
        (0.02, 0.04, 0.06, 0.09, 0.12),
        False,
        noise.rician_noise,
    ),
    Corruption(
        "poisson_noise",
        "Photon shot noise (CT, X-ray): counts at full intensity, normal approximation.",
        f"{MEDMNIST_C} chestmnist shot_noise photon counts (ImageNet-C: 60, 25, 12, 5, 3); "
        "Poisson drawn as N(lambda, lambda) so it runs on the device.",
        (60, 25, 18, 10, 5),
        False,
        noise.poisson_noise,
    ),
    Corruption(
        "speckle_noise",
        "Multiplicative Gaussian speckle (ultrasound): x (1 + s n).",
        f"{MEDMNIST_C} chestmnist speckle_noise; ImageNet-C form.",
        (0.05, 0.15, 0.2, 0.35, 0.45),
        False,
        noise.speckle_noise,
    ),
    Corruption(
        "gaussian_blur",
        "Isotropic Gaussian blur over all spatial axes (sigma in px at 224 px, spacing-aware).",
        f"{IMAGENET_C} gaussian_blur sigma at 224 px, scaled to the image size (linear above "
        "224 px, square root below); physically isotropic when spacing is given.",
        (1.0, 2.0, 3.0, 4.0, 6.0),
        False,
        blur.gaussian_blur,
    ),
    Corruption(
        "motion_blur",
        "Linear motion blur along a random in-plane direction: (radius, sigma) in px at 224 px.",
        f"{IMAGENET_C} / {MEDMNIST_C} (dermamnist) motion_blur (ImageMagick kernel); direction "
        "uniform over 360 deg instead of +-45 deg; per (H, W) slice in 3-D.",
        ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        False,
        blur.motion_blur,
    ),
    Corruption(
        "bias_field",
        "Smooth multiplicative intensity field exp(cubic polynomial) (MRI coil inhomogeneity).",
        f"{TORCHIO} RandomBiasField, order 3; coefficient bound per severity, severity 5 = TorchIO's default 0.5.",
        (0.1, 0.2, 0.3, 0.4, 0.5),
        False,
        intensity.bias_field,
    ),
    Corruption(
        "ghosting",
        "MRI ghosting: every n-th k-space line along H scaled by 1 - intensity: (n, intensity).",
        f"{TORCHIO} RandomGhosting (num_ghosts 4..10, intensity 0.5..1); phase axis fixed to H; "
        "only the k=0 line restored.",
        ((10, 0.4), (8, 0.55), (6, 0.7), (5, 0.85), (4, 1.0)),
        False,
        kspace.ghosting,
    ),
    Corruption(
        "spike",
        "MRI herringbone: k-space spikes of intensity x spectrum peak: (spikes, intensity).",
        f"{TORCHIO} RandomSpike (1 spike, intensity 1..3); intensity ramps from 0.25 and a "
        "2nd and 3rd spike join at severities 4 and 5.",
        ((1, 0.25), (1, 0.5), (1, 1.0), (2, 1.5), (3, 2.0)),
        False,
        kspace.spike,
    ),
    Corruption(
        "kspace_motion",
        "MRI motion: k-space lines mixed from rigidly moved copies: (degrees, px at 224, moves).",
        f"{TORCHIO} RandomMotion (10 deg, 10 mm, 2 movements at severity 5 ~ TorchIO defaults); "
        "in-plane rotation and translation only, Fourier-shear resampling.",
        ((2, 2, 2), (4, 4, 2), (6, 6, 2), (8, 8, 2), (10, 10, 2)),
        False,
        kspace.kspace_motion,
    ),
    Corruption(
        "gamma",
        "Gamma change u ** g, g = gamma or 1/gamma per sample (contrast curve).",
        f"{MEDMNIST_C} gamma_corr_up / gamma_corr_down (chest/organ: 1.1..2.0 and 0.9..0.4) "
        "folded into one with a random direction.",
        (1.1, 1.2, 1.4, 1.6, 2.0),
        False,
        intensity.gamma,
    ),
    Corruption(
        "brightness",
        "Brightness factor 1 +- amount per sample (scales the signal above low).",
        f"{MEDMNIST_C} chestmnist brightness_up (1.1..1.5) / brightness_down (0.9..0.5) folded "
        "into one with a random direction.",
        (0.1, 0.2, 0.3, 0.4, 0.5),
        False,
        intensity.brightness,
    ),
    Corruption(
        "contrast",
        "Contrast factor 1 +- amount about the sample mean, per sample.",
        f"{MEDMNIST_C} chestmnist contrast_up (1.1..1.6) / contrast_down (0.9..0.4) folded into "
        "one with a random direction.",
        (0.1, 0.2, 0.3, 0.4, 0.6),
        False,
        intensity.contrast,
    ),
    Corruption(
        "jpeg",
        "Baseline JPEG at a quality factor, each (H, W) plane as grayscale (host NumPy DCT coder).",
        f"{MEDMNIST_C} chestmnist jpeg_compression quality (ImageNet-C: 25, 18, 15, 10, 7); "
        "IJG-scaled standard luminance table, no entropy coding (lossless anyway).",
        (50, 30, 15, 10, 7),
        True,
        jpeg.jpeg,
    ),
    Corruption(
        "downsample_upsample",
        "Resolution loss: area-average down by a factor on every spatial axis, linear back up.",
        f"{TORCHIO} RandomAnisotropy downsampling 1.5..5, on all axes (isotropic target voxel "
        "of factor x finest spacing) instead of one random axis.",
        (1.5, 2.0, 2.5, 3.5, 5.0),
        False,
        resolution.downsample_upsample,
    ),
    Corruption(
        "pixelate",
        "Box-average to a fraction of the in-plane size, nearest-neighbour back up.",
        f"{IMAGENET_C} pixelate scale (= {MEDMNIST_C} bloodmnist); per (H, W) slice in 3-D.",
        resolution.PIXELATE_SCALES,
        False,
        resolution.pixelate,
    ),
    Corruption(
        "powerline",
        "Mains interference: 50 or 60 Hz sinusoid with its 3rd harmonic, SNR in dB.",
        f"{NSTDB}; sinusoidal mains model (Clifford, Azuaje & McSharry 2006, ch. 3). Needs the "
        "sampling rate (> 120 Hz).",
        NSTDB_SNR,
        False,
        signal.powerline,
        ("signal",),
        True,
    ),
    Corruption(
        "baseline_wander",
        "Respiration and movement: three sinusoids of 0.05-0.5 Hz per channel, SNR in dB.",
        f"{NSTDB} ('bw' record); sinusoidal wander model (Clifford, Azuaje & McSharry 2006). Needs the sampling rate.",
        NSTDB_SNR,
        False,
        signal.baseline_wander,
        ("signal",),
        True,
    ),
    Corruption(
        "electrode_motion",
        "Electrode motion: baseline steps relaxing in 0.3 s with noise bursts, SNR in dB.",
        f"{NSTDB} ('em' record, the hardest for QRS detectors); synthetic step-and-relax model "
        "instead of the recorded noise. Needs the sampling rate.",
        NSTDB_SNR,
        False,
        signal.electrode_motion,
        ("signal",),
        True,
    ),
    Corruption(
        "amplitude_scaling",
        "Gain error: each channel scaled by 1 +- amount about its mean (direction per channel).",
        f"Electrode impedance / amplifier gain error; amounts as {MEDMNIST_C}'s contrast "
        "(0.1..0.6) folded into one with a random direction.",
        (0.1, 0.2, 0.3, 0.4, 0.6),
        False,
        signal.amplitude_scaling,
        ("signal",),
    ),
    Corruption(
        "channel_dropout",
        "Lead-off: each channel flat at its mean for a random segment of a fraction of the window.",
        "Lost electrode contact (lead-off); our choice of fractions, the whole window at 5.",
        (0.1, 0.25, 0.4, 0.7, 1.0),
        False,
        signal.channel_dropout,
        ("signal",),
    ),
)

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _ALL}


def register(corruption: Corruption) -> Corruption:
    """Add ``corruption`` to the registry (a name already taken is refused)."""
    if corruption.name in CORRUPTIONS and CORRUPTIONS[corruption.name] is not corruption:
        raise AdvonnxError(f"corruption name {corruption.name!r} is taken; choose another")
    CORRUPTIONS[corruption.name] = corruption
    return corruption


def unregister(name: str) -> None:
    """Remove corruption ``name`` (tests that register a toy corruption)."""
    del CORRUPTIONS[name]


def _unknown(name: str) -> AdvonnxError:
    return AdvonnxError(f"unknown corruption {name!r}; valid names: all, {', '.join(CORRUPTIONS)}")


def corruption_names(spec: str = "all", *, modality: str | None = "image") -> list[str]:
    """Names selected by ``spec``: ``"all"`` or a comma-separated list (order kept, no repeats).

    ``"all"`` means every corruption of ``modality`` (``"image"``: images and volumes,
    ``"signal"``: 1-D signals, ``None``: both); named corruptions are taken as named."""
    if not isinstance(spec, str) or not spec.strip():
        raise AdvonnxError(f"empty corruption list; use all or names from: {', '.join(CORRUPTIONS)}")
    names: list[str] = []
    for part in spec.split(","):
        name = part.strip()
        if name == "all":
            selected = [n for n, c in CORRUPTIONS.items() if modality is None or modality in c.modalities]
        elif name in CORRUPTIONS:
            selected = [name]
        else:
            raise _unknown(name)
        names.extend(n for n in selected if n not in names)
    return names


def apply_corruption(name: str, x, severity: int, rng, *, layout: str, value_range=(0.0, 1.0), spacing=None):
    """Corrupt batch ``x`` (in ``layout``) with corruption ``name`` at ``severity`` 1..5.

    ``rng`` is an :class:`advonnx.xp.Random` (or an int seed); the result is deterministic given
    its seed. Parameters are relative to ``value_range`` (low, high); the result has the shape
    and dtype of ``x`` and is clipped to ``value_range``. ``spacing`` (voxel size per spatial
    axis, ordered D, H, W) makes blur and resolution loss physically isotropic. Unknown names
    and severities outside 1..5 raise :class:`advonnx.errors.AdvonnxError`.
    """
    corruption = CORRUPTIONS.get(name) if isinstance(name, str) else None
    if corruption is None:
        raise _unknown(str(name))
    return apply_corruption_with(corruption, x, severity, rng, layout=layout, value_range=value_range, spacing=spacing)
