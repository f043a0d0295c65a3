"""FedIoT: federated anomaly detection for IoT devices on N-BaIoT features."""

__version__ = "0.1.0"
