"""JSON rendering: the bytes Starlette's json.dumps rendering would give (and JSON.stringify)."""

import json

import pytest

from messenger.responses import JSONResponse

TEXTS = [
    "plain",
    'quotes " and \\ backslashes / slashes',
    "control \n\r\t\b\f \x00 \x1f characters",
    "unicode é ü 漢字 🙂 and separators \u2028 \u2029",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_rendering_matches_compact_json_dumps(text: str) -> None:
    content = {"message": {"id": "1", "content": text, "index": 9_007_199_254_740_993}}
    expected = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    assert JSONResponse(content).body == expected
