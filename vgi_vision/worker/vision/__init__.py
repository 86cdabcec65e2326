"""Pure vision code: image decoding, model files, inference, categories, image facts and OCR.

No transport, registry or storage code lives here, so models can be tested on their own."""
