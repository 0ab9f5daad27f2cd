"""How statements format timestamps: by PostgreSQL, in the wire format schemas declares."""

from messenger.schemas import SQL_TIMESTAMP as ISO_UTC

__all__ = ["ISO_UTC"]
