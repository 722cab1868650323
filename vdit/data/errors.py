"""The one error type the data package raises for bad datasets and records."""


class DataError(ValueError):
  """A dataset directory, metadata file or record that cannot be read as asked."""
