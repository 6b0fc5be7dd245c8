"""The kernel: settings, the patient schema, errors, risk tiers, features and file storage.

Everything else builds on it; it imports nothing else of the platform.
"""
