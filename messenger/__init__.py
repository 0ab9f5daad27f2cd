"""messenger: a chat microservice for conversations between two users."""

__version__ = "1.0.0"
