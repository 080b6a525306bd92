"""Soma's local models: provisioning from PyPI wheels, and loaders that run them off the event loop.

Importing this package is cheap; the runtime libraries (onnxruntime, ctranslate2, faster-whisper, piper,
kokoro-onnx) are imported by the loader modules that need them.
"""
