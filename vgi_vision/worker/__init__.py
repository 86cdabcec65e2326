"""What runs in the worker process: the dispatcher, the function registry and its functions,
vision code (decoding, inference, OCR) and LanceDB write-back, served by ``serve``."""
