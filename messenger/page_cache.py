"""Rendered message pages kept in memory, checked against the conversation's counter on each read.

Messages never change once written and a send only appends the index after the conversation's
counter (`channels.last_index`), so a page rendered when the counter was N stays right while the
counter is N, and for good once no later send can enter it: a forward page that was full, or a
backward page whose indexes were all taken. Every read still asks PostgreSQL for the counter and
the reader's membership in the statement that would read the page, so a send through another
instance shows on the next read and a non-member never gets a cached page. User names are not
checked: the service never renames a user.
"""

from collections import OrderedDict
from dataclasses import dataclass

from messenger.db import MessagePage
from messenger.responses import render_json
from messenger.schemas import LISTED_MESSAGE_KEYS

FOREVER = 2**63 - 1  # a counter no conversation reaches: the page can no longer change

# Bytes an entry costs beyond its body: the key, the entry and the dictionary slot.
ENTRY_OVERHEAD = 300

# (conversation id, True for a backward page, cursor index, limit)
PageKey = tuple[int, bool, int, int]


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    valid_through: int  # the page is right while the conversation's counter is at most this
    link: str | None  # the `Link` header without the path: `?after_index=..>; rel="next"`


class PageCache:
    """Least recently used pages, at most `max_bytes` of them (0: keep nothing)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._pages: OrderedDict[PageKey, Page] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: PageKey) -> Page | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, key: PageKey, page: Page) -> None:
        cost = len(page.body) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        self.discard(key)
        self._pages[key] = page
        self.size += cost
        while self.size > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self.size -= len(evicted.body) + ENTRY_OVERHEAD

    def discard(self, key: PageKey) -> None:
        page = self._pages.pop(key, None)
        if page is not None:
            self.size -= len(page.body) + ENTRY_OVERHEAD


def render_page(found: MessagePage, cursor: int, limit: int, *, backward: bool) -> Page:
    """The response body of a page read from PostgreSQL, its `Link`, and how long it is right.

    `cursor` is the page's `after_index` (`before_index` when `backward`).
    """
    rows, last_index = found.rows, found.last_index
    assert last_index is not None
    # A row's first columns are the listed message's, in its keys' order (db renders them so).
    messages = [dict(zip(LISTED_MESSAGE_KEYS, row.values(), strict=False)) for row in rows]
    link = None
    if len(rows) == limit:
        if backward:
            link = f'?before_index={rows[0]["index"]}&limit={limit}>; rel="prev"'
        else:
            link = f'?after_index={rows[-1]["index"]}&limit={limit}>; rel="next"'
    # No later send can enter a full forward page, nor a backward one below the counter.
    final = cursor - 1 <= last_index if backward else len(rows) == limit
    return Page(
        body=render_json({"messages": messages}),
        valid_through=FOREVER if final else last_index,
        link=link,
    )
