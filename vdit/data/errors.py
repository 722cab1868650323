"""The one error type the data package raises for bad datasets and records."""
from vdit.core.errors import UserError


class DataError(UserError):
  """A dataset directory, metadata file or record that cannot be read as asked."""
