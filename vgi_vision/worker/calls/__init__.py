"""What the SQL functions share, kept apart from them so that ``functions/`` holds one module
per SQL function and no function module imports another.

``context`` is what a call may touch of its worker (``VisionContext``) and the image
arguments every image function takes; ``runs`` makes a call's stored results one
all-or-nothing write-back run; ``paging`` pages stored results from a pinned table version;
``fixed_table`` scans a table fixed for the call (the models, classes or categories);
``taxonomy`` answers WordNet category questions; ``text_reading`` reads and stages OCR text.
"""
