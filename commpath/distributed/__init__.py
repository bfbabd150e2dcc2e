"""Many captures on Dask: one decode task per capture, on local cores or a dask.distributed cluster."""

from ._cluster import connect
from ._cores import decode_on_cores
from ._files import expand, is_url, upload_folder
from ._run import Decoded, decode_run, read_parts

__all__ = ["Decoded", "connect", "decode_on_cores", "decode_run", "expand", "is_url", "read_parts", "upload_folder"]
