"""``vgi-vision browse``: a local, read-only web gallery over a write-back store.

``catalog`` answers the page's questions (filtered, ordered pages, facets, neighbours) from a
snapshot of the store; ``facts`` reads EXIF facts from files under the data root; ``app`` is
the ASGI application (server-rendered HTML, a little JavaScript, no network at run time);
``serve`` binds it with Hypercorn under the same security rules as ``serve --http``.
"""
