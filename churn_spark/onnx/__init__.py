"""The registered churn model as an ONNX graph, for services that score one row without Spark.

`convert` (needs pyspark, onnxmltools) builds the graph from a PipelineModel; `job` writes
`models/<version>/model.onnx` and its feature schema; `schema` and `runtime` (no pyspark import) validate a
posted feature row and run the graph with onnxruntime, as the REST service does.
"""
