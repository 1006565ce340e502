"""Reading a finished store: access, the PyTorch dataset, previews, the report, exports.

Imports nothing of the generator.
"""
