"""A user's own TFDS-prepared data set, read by path without TensorFlow.

`tfds.data_source` gives random access (`len`, `[i]`, `__getitems__`) to data sets prepared in the
array_record format; reading them needs `tensorflow-datasets` and `array-record` but not
TensorFlow (images are decoded with PIL).  Preparing a data set (`tfds build`, or a builder's
`download_and_prepare`) may need TensorFlow and the network, so it is done elsewhere and the
folder is copied here; nothing is downloaded at run time.

Layout expected under `data_dir`: `<name>/[<config>/]<version>/` holding `dataset_info.json`,
`features.json` and `<name>-<split>.array_record-NNNNN-of-NNNNN` files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from core.data import errors

_TFDS_INSTALL = errors.pip_install_hint("tensorflow-datasets array-record")


def _prepare_hint(name: str, data_dir: str) -> str:
  base = name.split(":")[0].split("/")[0]
  return (f"Prepare it where TensorFlow and the network are available: `pip install tensorflow "
          f"tensorflow-datasets array-record && tfds build {base} --data_dir {data_dir} "
          f"--file_format=array_record`, then copy the folder {os.path.join(data_dir, base)} to this machine")


def load_tfds(name: str, split: str, data_dir: str | os.PathLike, **kwargs: Any) -> Sequence[Any]:
  """Random access to the TFDS data set `name`, prepared as array_record under `data_dir`.

  Args:
    name: a TFDS name, optionally with config and version: "mnist", "mnist:3.0.1", "ds/config".
    split: a TFDS split string: "train", "test", "train[:10%]", ...
    data_dir: the folder the data set was prepared into (the `--data_dir` of `tfds build`).
    **kwargs: passed on to `tfds.data_source` (e.g. `decoders`).

  Returns:
    `tfds.data_source(...)`: `len(source)` examples; `source[i]` and `source.__getitems__(indices)`
    give each example as the data set's features decoded to numpy (e.g. TFDS mnist: {"image":
    uint8 [28, 28, 1], "label": int64}); `source.dataset_info` describes them.

  Raises:
    DataSourceMissingError: tensorflow-datasets is not installed, the data set is not prepared
      under `data_dir`, or it was prepared in a format without random access (tfrecord).  The
      message names the path and the command that prepares it.
    ValueError: `split` is not one of the data set's splits.
  """
  tfds = errors.import_source_module("tensorflow_datasets", what="Reading a TFDS data set",
                                     install=_TFDS_INSTALL)
  data_dir = os.path.expanduser(os.fspath(data_dir))  # "~/..." reaches here unexpanded from --flag=~/...
  base = name.split(":")[0].split("/")[0]
  dataset_dir = os.path.join(data_dir, base)
  infos = _dataset_infos(dataset_dir)
  if not infos:
    raise errors.DataSourceMissingError(
        f"TFDS data set {name!r} is not prepared under {data_dir}: no {dataset_dir}/<version>/dataset_info.json. "
        f"{_prepare_hint(name, data_dir)}.")
  formats = {info.get("fileFormat", "tfrecord") for info in infos.values()}
  if not formats & {"array_record", "parquet"}:
    versions = ", ".join(sorted(infos))
    raise errors.DataSourceMissingError(
        f"TFDS data set {name!r} under {versions} is stored as {', '.join(sorted(formats))}, which has no random "
        f"access. Rebuild it as array_record ({_prepare_hint(name, data_dir)}), or convert it where TensorFlow "
        f"is installed: `tfds convert_format --dataset_dir {dataset_dir} --out_file_format=array_record`.")
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False, try_gcs=False, **kwargs)


def _dataset_infos(dataset_dir: str) -> dict[str, dict[str, Any]]:
  """{version folder: parsed dataset_info.json} for every finished preparation below `dataset_dir`."""
  infos = {}
  if not os.path.isdir(dataset_dir):
    return infos
  for root, dirs, files in os.walk(dataset_dir):
    # tfds writes into `incomplete.*` folders and renames them when done; those are not data sets.
    dirs[:] = [d for d in dirs if not d.startswith("incomplete")]
    if "dataset_info.json" in files:
      with open(os.path.join(root, "dataset_info.json")) as f:
        infos[root] = json.load(f)
  return infos
