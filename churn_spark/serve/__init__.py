"""`churn-spark serve`: the latest churn scores and target list over REST, without a JVM (docs/service.md).

Layering (top to bottom): `job.py` (the entry: settings -> a running uvicorn) -> `app.py` (routes, auth,
metrics) -> `state.py` (the loaded snapshot and the reload poller) -> `snapshot.py` (reads the Delta tables
with delta-rs and the registry's files), `scorer.py` (the exported ONNX model) and `ids.py`. Nothing here
imports pyspark: the service process starts in about a second and holds only the slice it serves.
"""
