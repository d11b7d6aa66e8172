"""Temporary: the names that modules being split by another change still import from here. Removed as soon as
those modules import them from [`prediff.data.readers`] and [`prediff.utils`]."""

from ..utils.checks import check_positive_int, check_seed
from ..utils.files import atomic_output, check_outputs_spare_inputs, give_plain_permissions
from .readers import check_array_metadata, import_optional, load_npy, open_hdf5, open_netcdf, open_zarr

__all__ = [
    "atomic_output",
    "check_array_metadata",
    "check_outputs_spare_inputs",
    "check_positive_int",
    "check_seed",
    "give_plain_permissions",
    "import_optional",
    "load_npy",
    "open_hdf5",
    "open_netcdf",
    "open_zarr",
]
