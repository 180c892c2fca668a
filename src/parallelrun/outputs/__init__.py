"""Job outputs: workers write committed parts; the driver commits their records and assembles the result.

    format_result(...)        run()'s result -> output bytes (in the worker); ResultTypeError,
                              ResultMismatchError for a result that breaks "one element per input"
    OutputLocation.parse(...) a local folder, file://, az://, abfs://, s3:// (picklable)
      .check_writable()       before dispatch
      .part_writer(...)       in each worker -> PartWriter.write(batch, attempt, result) -> PartRecord
      .verify(record)         on resume: adopt a written part of an uncommitted batch
      .assemble(records, ...) the final file (layout "file") or dataset folder (layout "dataset")
      .claim(run_id)          the driver's exclusive hold on a local output folder (OutputClaim, _claim)
      .cleanup(names)         parts no committed record names
    OutputError               the output cannot be written (errors.py); PartCorruptedError, its subclass

Modules: ``_format`` (results to bytes), ``_records`` (names, records), ``_store`` (local / fsspec bytes),
``_writer`` (worker side), ``_location`` (the API above), ``_assemble`` (local and dataset assembly),
``_compose`` (server-side composition on Azure Blob), ``_compose_s3`` (on S3), ``_offload`` (helper
processes that move the bytes a service cannot copy, so that the driver never does), ``_parquet_concat``
(one Parquet file from the parts' bytes and a merged footer), ``_parquet_inplace`` (one Parquet file made
from the workers' shared file in place), ``_parquet_footer`` (the footer's Thrift compact protocol),
``_parquet_scan`` (a footer scanned for its offsets), ``_parquet_index`` (that scan, made by the worker and
stored in its part).
"""

from __future__ import annotations

from ..errors import OutputError
from ._claim import OutputClaim
from ._format import FormattedResult, ResultMismatchError, ResultTypeError, format_result
from ._location import OutputLocation
from ._records import LAYOUTS, MANIFEST, PartCorruptedError, PartRecord, default_file_name
from ._writer import PartWriter

__all__ = [
    "LAYOUTS",
    "MANIFEST",
    "FormattedResult",
    "OutputClaim",
    "OutputError",
    "OutputLocation",
    "PartCorruptedError",
    "PartRecord",
    "PartWriter",
    "ResultMismatchError",
    "ResultTypeError",
    "default_file_name",
    "format_result",
]
