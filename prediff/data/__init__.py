"""Datasets: synthetic storms (the default, no download; calibrated to a radar archive in mm/h if wanted), N-body
digits, SEVIR / SEVIR-LR, ICAR-ENSO, arrays, radar archives (pysteps data sources).

Every data set is a ``torch.utils.data.Dataset`` whose items are dicts with ``"frames"``, a float32 tensor
(T, H, W, C) scaled to [0, 1], plus data-set specific keys; radar archives ([`RadarArchiveDataset`]) give rain rate
in mm/h instead, with NaN or a mask outside the radar domain. All are picklable and work with
``DataLoader(num_workers>0)``; HDF5 files are opened once per worker. Optional packages (h5py, pandas, xarray,
zarr, Pillow) are imported only when needed: ``pip install "prediff[data]"``.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .arrays import ArraySequenceDataset
    from .augment import RandomFlipRotate, flip_rotate
    from .enso import ENSO_SST_RANGE, ENSODataset
    from .io import SequenceFile, inspect_path, merge_sequence_files, write_sequences
    from .nbody import NBodyDataset, nbody_acceleration, nbody_energy, simulate_nbody
    from .radar import (
        RadarArchiveDataset,
        RadarFrames,
        RadarSource,
        block_mean,
        parse_radar_time,
        read_radar_events,
        scan_radar,
    )
    from .sevir import (
        SEVIR_DTYPES,
        SEVIR_VALUE_RANGES,
        SEVIRDataset,
        downsample_sevir,
        earthformer_sevir_splits,
        prediff_sevir_splits,
        read_catalog,
    )
    from .statistics import IntensityStats, future_intensity_stats
    from .storm_calibration import RainStatistics, StormCalibration, calibrate_storm_generator, measure_rain_statistics
    from .storm_generator import StormParameters, generate_storm_sequence
    from .storms import SyntheticStormDataset

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".arrays": ["ArraySequenceDataset"],
        ".augment": ["RandomFlipRotate", "flip_rotate"],
        ".enso": ["ENSO_SST_RANGE", "ENSODataset"],
        ".io": ["SequenceFile", "inspect_path", "merge_sequence_files", "write_sequences"],
        ".nbody": ["NBodyDataset", "nbody_acceleration", "nbody_energy", "simulate_nbody"],
        ".radar": [
            "RadarArchiveDataset",
            "RadarFrames",
            "RadarSource",
            "block_mean",
            "parse_radar_time",
            "read_radar_events",
            "scan_radar",
        ],
        ".sevir": [
            "SEVIR_DTYPES",
            "SEVIR_VALUE_RANGES",
            "SEVIRDataset",
            "downsample_sevir",
            "earthformer_sevir_splits",
            "prediff_sevir_splits",
            "read_catalog",
        ],
        ".statistics": ["IntensityStats", "future_intensity_stats"],
        ".storm_calibration": [
            "RainStatistics",
            "StormCalibration",
            "calibrate_storm_generator",
            "measure_rain_statistics",
        ],
        ".storm_generator": ["StormParameters", "generate_storm_sequence"],
        ".storms": ["SyntheticStormDataset"],
    },
)

__all__ = [
    "ENSO_SST_RANGE",
    "SEVIR_DTYPES",
    "SEVIR_VALUE_RANGES",
    "ArraySequenceDataset",
    "ENSODataset",
    "IntensityStats",
    "NBodyDataset",
    "RadarArchiveDataset",
    "RadarFrames",
    "RadarSource",
    "RainStatistics",
    "RandomFlipRotate",
    "SEVIRDataset",
    "SequenceFile",
    "StormCalibration",
    "StormParameters",
    "SyntheticStormDataset",
    "block_mean",
    "calibrate_storm_generator",
    "downsample_sevir",
    "earthformer_sevir_splits",
    "flip_rotate",
    "future_intensity_stats",
    "generate_storm_sequence",
    "inspect_path",
    "measure_rain_statistics",
    "nbody_acceleration",
    "nbody_energy",
    "parse_radar_time",
    "prediff_sevir_splits",
    "read_catalog",
    "read_radar_events",
    "scan_radar",
    "simulate_nbody",
    "merge_sequence_files",
    "write_sequences",
]
