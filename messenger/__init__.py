"""messenger: a chat microservice for conversations between two users."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("messenger")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
