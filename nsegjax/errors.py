"""User-facing errors: printed as one line by the CLI, never as a traceback wall."""


class NsegError(Exception):
  """Base class for errors caused by the user's input (config, data, files)."""


class ConfigError(NsegError, ValueError):
  """An unknown name, an unknown key or an out-of-range value in the config."""


class DataError(NsegError, ValueError):
  """A missing, unreadable or inconsistent data file; the message names the file."""
