"""FedDetect: federated training, thresholds and evaluation from devices' statistics only.

- :mod:`.messages`: what travels (weights, summable statistics, counts);
- :mod:`.client`: :class:`DeviceClient`, everything a device computes on its own data;
- :mod:`.server`: :class:`FedDetectServer`, the run's phases over any :class:`ClientPool`;
- :mod:`.strategies`: FedAvg / FedProx / FedAdam, learning-rate schedules, sampling;
- :mod:`.evaluation`: thresholds and per-device / pooled metrics;
- :mod:`.devices`: which devices take part and what data each holds.
"""
