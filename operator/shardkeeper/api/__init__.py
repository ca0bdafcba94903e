"""pydantic models: the one schema source for the CRDs, the agent protocol and the descriptors.

Nothing here does I/O.
"""
