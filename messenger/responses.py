"""JSON responses rendered by orjson: compact like JSON.stringify, keys in insertion order."""

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    """Byte for byte what Starlette renders with `json.dumps`, at a fraction of the CPU."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
