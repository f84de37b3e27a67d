"""Run records: the file format and its one writer, the one reader, and the run key with the
rules that group seeds and match baselines (docs/run-record.md).

Training writes records, sweeps and reports read them; all three stand on this package and
none imports another's internals. It imports nothing of training, sweeps or reports.
"""

from .format import RECORD_NAME, SCHEMA, VERSION, now_iso, write_json_atomic, write_record
from .key import derive_key, differences, setup_of, variant_of
from .reader import LoadResult, Problem, Run, load_record, load_runs, read_run

__all__ = [
    "RECORD_NAME",
    "SCHEMA",
    "VERSION",
    "LoadResult",
    "Problem",
    "Run",
    "derive_key",
    "differences",
    "load_record",
    "load_runs",
    "now_iso",
    "read_run",
    "setup_of",
    "variant_of",
    "write_json_atomic",
    "write_record",
]
