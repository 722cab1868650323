"""Released weights from other codebases converted to and from vdit's."""
