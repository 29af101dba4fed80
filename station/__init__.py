"""Reject station: camera, classifier, serial link to the Arduino Mega, audit.

The run-time package (`station.classifier`, and later the link, camera and
service) must never import TensorFlow; training lives in `station.training`.
"""

__version__ = "0.1.0"
