"""Keeps the console readable: library INFO chatter (Orbax logs every file it writes) is dropped,
warnings and errors from every library are kept, and vdit's and clu's INFO lines stay."""
import logging as py_logging

from absl import logging

# clu is not here: its logging writer prints the training metrics.
_CHATTY_PATHS = ("/orbax/", "/grain/", "/jax/", "/tensorflow/", "/etils/")


class _DropLibraryInfo(py_logging.Filter):

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or not any(p in record.pathname for p in _CHATTY_PATHS)


def quiet_library_logs() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_DropLibraryInfo())
  py_logging.getLogger("absl").addFilter(_DropLibraryInfo())
