"""The pod: device software that holds a person's data and trains consented models locally.

Pure Python (no Django): it talks to the service over HTTP and WebSocket only.
"""

__version__ = "0.1.0"
