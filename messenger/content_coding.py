"""Compressed request bodies: `Content-Encoding` gzip and deflate inflated as express.json did.

express.json (body-parser) inflated `gzip` and `deflate` (zlib-wrapped, as Node's
zlib.createInflate reads it) and passed `identity` through; any other coding, or a list of
codings, was a 415. Its size limit applied to the inflated body. Here a body is inflated chunk
by chunk as it arrives and never past the limit: a 10 MB zip bomb is refused once its first
`limit` bytes are out, having used no more memory than that.
"""

import zlib

from messenger.errors import (
    BODY_NOT_DECODABLE,
    CONTENT_ENCODING_UNSUPPORTED,
    BadRequest,
    UnsupportedMediaType,
)

_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class TooLarge(Exception):
    """The inflated body passed the limit."""


class Inflater:
    """One body's inflation: `feed` each chunk, then `finish`; never more than `limit` bytes out.

    Raises BadRequest for data that is not what its coding says, TooLarge past the limit.
    """

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0  # inflated bytes so far
        self._fed = False
        self._stream = self._new_stream()

    def _new_stream(self) -> "zlib._Decompress":
        return zlib.decompressobj(_WINDOW_BITS[self.coding])

    def feed(self, data: bytes) -> bytes:
        pieces = []
        while data:
            self._fed = True
            if self._stream.eof:
                # gzip members may follow one another (Node's gunzip reads them all as one
                # body); after a deflate stream nothing may follow.
                if self.coding != "gzip":
                    raise self._not_decodable()
                self._stream = self._new_stream()
            room = self.limit - self.size + 1  # one byte more than fits: enough to know
            try:
                piece = self._stream.decompress(data, room)
            except zlib.error:
                raise self._not_decodable() from None
            self.size += len(piece)
            if self.size > self.limit:
                raise TooLarge
            pieces.append(piece)
            # Output under `room` means all input was taken: what is left followed the end.
            data = self._stream.unused_data if self._stream.eof else b""
        return b"".join(pieces)

    def finish(self) -> None:
        """The body has ended: so must its compressed stream (unless the body was empty)."""
        if self._fed and not self._stream.eof:
            raise self._not_decodable()

    def _not_decodable(self) -> BadRequest:
        return BadRequest(BODY_NOT_DECODABLE.format(encoding=self.coding))


def inflater(content_encoding: str | None, limit: int) -> Inflater | None:
    """The inflater a body of this `Content-Encoding` needs; None for none or `identity`.

    Raises UnsupportedMediaType (415) for any other coding, as express.json did.
    """
    if content_encoding is None:
        return None
    coding = content_encoding.strip().lower()
    if coding == "identity":
        return None
    if coding not in _WINDOW_BITS:
        raise UnsupportedMediaType(CONTENT_ENCODING_UNSUPPORTED.format(encoding=coding[:40]))
    return Inflater(coding, limit)
