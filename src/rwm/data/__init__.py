"""Recorded transition datasets: one HDF5 format (format.py), written atomically (writer.py), read in
pieces (reader.py), recorded from the simulator (record.py), merged (merge.py), and converted from the
upstream lite's CSV files (csv_import.py) and to/from Minari (minari_io.py).

The recording / conversion modules pull in the simulator or third-party packages, so they are
imported on first use: ``from rwm.data import record_dataset`` works, but ``import rwm.data``
stays light.
"""

from rwm.data.format import FORMAT_NAME, LAYOUT_VERSION, DatasetError
from rwm.data.reader import DatasetReader, open_dataset
from rwm.data.writer import DatasetWriter

_LAZY = {
    "record_dataset": "rwm.data.record", "EpisodeAssembler": "rwm.data.record", "DatasetRecorder": "rwm.data.record",
    "merge_datasets": "rwm.data.merge", "import_csv": "rwm.data.csv_import",
    "export_minari": "rwm.data.minari_io", "import_minari": "rwm.data.minari_io",
}

__all__ = ["FORMAT_NAME", "LAYOUT_VERSION", "DatasetError", "DatasetReader", "DatasetWriter", "open_dataset",
           "record_dataset", "EpisodeAssembler", "DatasetRecorder", "merge_datasets", "import_csv", "export_minari",
           "import_minari"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rwm.data' has no attribute '{name}'")
